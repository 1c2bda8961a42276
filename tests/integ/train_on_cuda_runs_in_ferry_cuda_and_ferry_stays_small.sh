#!/usr/bin/env bash
# In a build with CUDA, `ferry` links no CUDA library (they cost every process, the mount
# daemon included, about 100 MiB at start) and hands `ferry train --device cuda` to ferry-cuda
# beside it: whatever that run then says (no GPU here; on a GPU machine, the missing data) is
# ferry-cuda's, in one line. A ferry whose ferry-cuda is missing says so in one line and exits
# 1. A build without CUDA says that it has none, in one line.
source "$(dirname "$0")/train_lib.sh"
args=(--data "$T/none_*.bin" --steps 1 --out "$T/run")

# one_line WHAT: the run ended with status 1 and one line on stderr
one_line() {
	[ "$rc" = 1 ] || fail "$1: exit $rc, not 1: $(cat "$T/err")"
	[ "$(grep -c . "$T/err")" = 1 ] || fail "$1: not one line: $(cat "$T/err")"
}

rc=0
timeout -k 5 60 "$FERRY" train --device cuda "${args[@]}" >/dev/null 2>"$T/err" || rc=$?
one_line "--device cuda"
if ! build_has CUDA; then
	grep -q "built without CUDA" "$T/err" || fail "a build without CUDA: $(cat "$T/err")"
	pass "a build without CUDA says so"
fi

need_built "$FERRY_BUILD/mount/ferry-cuda"
libs=$(ldd "$FERRY" | grep -E 'libcudart|libcublas|libnccl|libcuda\.' || true)
[ -z "$libs" ] || fail "ferry links CUDA libraries: $libs"
grep -q "built without CUDA" "$T/err" && fail "--device cuda was not handed to ferry-cuda"
echo "ok: --device cuda -> $(cat "$T/err")"

mkdir "$T/alone"
cp "$FERRY" "$T/alone/ferry"
rc=0
timeout -k 5 60 "$T/alone/ferry" train --device=cuda "${args[@]}" >/dev/null 2>"$T/err" || rc=$?
one_line "ferry without ferry-cuda beside it"
grep -q "ferry-cuda" "$T/err" || fail "the missing ferry-cuda is not named: $(cat "$T/err")"
echo "ok: without ferry-cuda -> $(cat "$T/err")"
pass "ferry train --device cuda runs in ferry-cuda; ferry links no CUDA library"
