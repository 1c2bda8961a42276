#!/usr/bin/env bash
# Runs ferry's whole test suite: installs what it needs (Debian 12, as root), builds a normal
# and a sanitizer (address,undefined) tree, runs every suite in both (the format suite, whether
# the C and CUDA sources are as scripts/format.sh leaves them, in the first only), then two
# more stages:
#   fuzz: a clang tree (build-fuzz) runs each libFuzzer target of tests/fuzz for
#         FERRY_FUZZ_SECONDS (default 20) from its seed corpus;
#   tsan: a ThreadSanitizer tree (build-tsan) runs the fetch and cache Criterion tests and the
#         concurrency integration tests (random_preads_equal_source and every test with
#         "threads" in its name).
# It ends with one line "N passed, N failed, N skipped" over all of them. Safe to run twice.
# Extra arguments go to the `meson test` of the first two trees.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src" || exit 1

bash scripts/deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

configure() { # dir, extra meson args...
	local dir=$1; shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
	else
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
	fi || { cat "$dir.setup.log" >&2; echo "test.sh: meson setup $dir failed" >&2; exit 1; }
}

build() { # dir, [targets...]: all when none are named
	local dir=$1; shift
	ninja -C "$dir" "$@" >"$dir.build.log" 2>&1 ||
		{ tail -40 "$dir.build.log" >&2; echo "test.sh: build of $dir failed" >&2; exit 1; }
}

setup() { # dir, extra meson args...
	configure "$@"
	build "$1"
}

# The build targets of dir that pass the python test on a target t (meson's introspection).
targets_where() { # dir, python expression
	meson introspect "$1" --targets | /usr/bin/python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if '"$2"':
        print(os.path.relpath(t["filename"][0], sys.argv[1]))' "$1"
}

setup build
setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
rc=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || rc=1
meson test -C build-asan --print-errorlogs --num-processes 2 --no-suite format --no-suite image "$@" || rc=1

# Stage fuzz: libFuzzer needs clang; only the fuzz targets are built in that tree.
stage_start=$SECONDS
CC=clang configure build-fuzz -Dcuda=disabled
rm -f build-fuzz/meson-logs/testlog.json
# shellcheck disable=SC2046 # one target a word
build build-fuzz $(targets_where build-fuzz \
	't["defined_in"].endswith("/tests/fuzz/meson.build") and t["type"] == "executable" and not t["name"].endswith("-replay")')
meson test -C build-fuzz --no-rebuild --print-errorlogs --num-processes 2 --suite libfuzzer || rc=1
echo "test.sh: fuzz stage took $((SECONDS - stage_start)) s"

# Stage tsan. TSan stops at the first report (the daemon's go to files that tests/integ/lib.sh
# prints, failing the test); tests/lib/tsan.supp says which reports are not races and why.
# Criterion cannot start under TSan without tests/lib/tsan_criterion_shim.c (see there),
# preloaded for the unit tests only. TSan runs the cache's stress tests 10-20x slower (the
# cache unit tests took 103 s alone here, over meson's 120 s under load): 4x the timeouts.
stage_start=$SECONDS
configure build-tsan -Db_sanitize=thread -Db_lundef=false -Dcuda=disabled
build build-tsan mount/ferry mount/mount.ferry tests/unit/test_fetch tests/unit/test_cache
cc -O2 -shared -fPIC -o build-tsan/tsan_criterion_shim.so tests/lib/tsan_criterion_shim.c -ldl ||
	{ echo "test.sh: cannot build the TSan shim for Criterion" >&2; exit 1; }
rm -f build-tsan/meson-logs/tsan-*.json
tsan_integ=$(meson test -C build-tsan --no-rebuild --list 2>/dev/null | sed -n 's|^ferry:integ / ||p' |
	grep -E '^(random_preads_equal_source|reads_from_eight_threads_agree)$|threads')
[ -n "$tsan_integ" ] || { echo "test.sh: no concurrency integration test found" >&2; exit 1; }
tsan_options=halt_on_error=1:second_deadlock_stack=1:suppressions=$src/tests/lib/tsan.supp
TSAN_OPTIONS=$tsan_options LD_PRELOAD=$src/build-tsan/tsan_criterion_shim.so \
	meson test -C build-tsan --no-rebuild --print-errorlogs --num-processes 2 --logbase tsan-unit \
	--timeout-multiplier 4 fetch cache || rc=1
# shellcheck disable=SC2086 # one test name a word
TSAN_OPTIONS=$tsan_options \
	meson test -C build-tsan --no-rebuild --print-errorlogs --logbase tsan-integ $tsan_integ || rc=1
echo "test.sh: tsan stage took $((SECONDS - stage_start)) s"

# One closing line over every tree, from meson's own logs.
/usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
	build-fuzz/meson-logs/testlog.json build-tsan/meson-logs/tsan-unit.json \
	build-tsan/meson-logs/tsan-integ.json <<'PY'
import json, sys
p = f = s = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        r = json.loads(line).get("result")
        if r == "OK" or r == "EXPECTEDFAIL":
            p += 1
        elif r == "SKIP":
            s += 1
        else:
            f += 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $rc
