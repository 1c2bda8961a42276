#!/usr/bin/env bash
# Runs one libFuzzer target for FERRY_FUZZ_SECONDS (default 20) from its seed corpus (the
# seeds stay untouched: new inputs go to a temp dir). A crash, leak, timeout or broken
# invariant fails, and the input that did it is kept in FERRY_FUZZ_ARTIFACTS (default: a
# fuzz-artifacts folder next to the binary) and printed as hex: add it to the corpus.
# FERRY_FUZZ_KEEP=DIR keeps the inputs it found in DIR.
# usage: run_libfuzzer.sh FUZZER CORPUS_DIR [libFuzzer flags...]
set -euo pipefail
exe=$1 seeds=$2
shift 2
secs=${FERRY_FUZZ_SECONDS:-20}
name=$(basename "$exe")
art=${FERRY_FUZZ_ARTIFACTS:-$(dirname "$exe")/fuzz-artifacts}
mkdir -p "$art"
if [ -n "${FERRY_FUZZ_KEEP:-}" ]; then
	work=$FERRY_FUZZ_KEEP
	mkdir -p "$work"
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/ferry_fuzz_$name.XXXXXX")
	trap 'rm -rf "$work"' EXIT
fi
if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
	echo "FAIL: no seed corpus in $seeds" >&2
	exit 1
fi
# Targets may run in parallel and share $art: count this one's findings only.
findings() { find "$art" -maxdepth 1 -name "$name-*" | wc -l; }
before=$(findings)
log=$(mktemp "${TMPDIR:-/tmp}/ferry_fuzz_$name.log.XXXXXX")
# libFuzzer's own exit code for a finding is 77, which meson reads as SKIP: make it 1.
rc=0
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
	-error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
	-artifact_prefix="$art/$name-" "$@" "$work" "$seeds" >"$log" 2>&1 || rc=$?
tail -60 "$log"
rm -f "$log"
if [ "$rc" -ne 0 ] || [ "$(findings)" -ne "$before" ]; then
	# The newest three (names are libFuzzer's: NAME-crash-SHA1, no blanks).
	# shellcheck disable=SC2012
	for f in $(ls -t "$art"/"$name"-* 2>/dev/null | head -3); do
		echo "--- reproducer $f:"
		od -An -tx1 -v "$f" | head -20
	done
	echo "FAIL: $name found a crash or a broken invariant in $secs s"
	exit 1
fi
echo "PASS: $name: $secs s, no crash ($(find "$work" -type f | wc -l) inputs found)"
