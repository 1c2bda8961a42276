#!/usr/bin/env bash
# Runs ferry's whole test suite: installs what it needs (Debian 12, as root), builds a normal
# and a sanitizer (address,undefined) tree, runs every suite in both, and ends with one line
# "N passed, N failed, N skipped". Safe to run twice. Extra arguments go to `meson test`.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src" || exit 1

bash scripts/deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

setup() { # dir, extra meson args...
	local dir=$1; shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
	else
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
	fi || { cat "$dir.setup.log" >&2; echo "test.sh: meson setup $dir failed" >&2; exit 1; }
	ninja -C "$dir" >"$dir.build.log" 2>&1 ||
		{ tail -40 "$dir.build.log" >&2; echo "test.sh: build of $dir failed" >&2; exit 1; }
}

setup build
setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
rc=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || rc=1
meson test -C build-asan --print-errorlogs --num-processes 2 "$@" || rc=1

# One closing line over both trees, from meson's own logs.
/usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
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
