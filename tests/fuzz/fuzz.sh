#!/usr/bin/env bash
# Fuzzes ferry's parsers with libFuzzer for as long as asked: builds the fuzz targets in a
# clang tree (FERRY_FUZZ_BUILD, default build-fuzz at the source root; only those targets)
# and runs each named target (default: all) for SECONDS (default 60) from its seed corpus in
# tests/fuzz/corpus/TARGET. A finding fails, with its input kept in FERRY_FUZZ_ARTIFACTS
# (default BUILD/tests/fuzz/fuzz-artifacts) and printed: add it to the corpus, and a unit
# test where apt. FERRY_FUZZ_KEEP=DIR keeps the inputs found (DIR/TARGET) to grow a corpus.
# usage: tests/fuzz/fuzz.sh [SECONDS [TARGET...]]   (scripts/test.sh runs 20 s of each)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
secs=${1:-60}
shift || true
build=${FERRY_FUZZ_BUILD:-$src/build-fuzz}
command -v clang >/dev/null || { echo "fuzz.sh: no clang (scripts/deps.sh installs it)" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" "$src" -Dcuda=disabled >/dev/null ||
		{ echo "fuzz.sh: meson setup $build failed" >&2; exit 1; }
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for c in "$here"/fuzz_*.c; do
		t=$(basename "$c" .c)
		targets+=("${t#fuzz_}")
	done
fi
ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}" >/dev/null ||
	{ echo "fuzz.sh: building the fuzz targets failed" >&2; exit 1; }
rc=0
for t in "${targets[@]}"; do
	keep=${FERRY_FUZZ_KEEP:+$FERRY_FUZZ_KEEP/$t}
	FERRY_FUZZ_SECONDS=$secs FERRY_FUZZ_KEEP=$keep \
		bash "$here/run_libfuzzer.sh" "$build/tests/fuzz/fuzz-$t" "$here/corpus/$t" | tail -3 ||
		rc=1
done
exit $rc
