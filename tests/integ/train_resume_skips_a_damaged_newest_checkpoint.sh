#!/usr/bin/env bash
# A run whose newest checkpoint does not verify (its model file truncated, as a crash or a full
# disk leaves it; or a NaN among its weights) resumes from the newest one that does, says in one
# line which it skipped and why, and then trains exactly as an uninterrupted run from there;
# when none verifies it fails with one line.
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 16 --batch 2
	--steps 12 --warmup 1 --eval-every 0 --ckpt-every 2 --keep 3 --seed 3 --threads 1)
timeout 60 "$FERRY" train "${args[@]}" --out "$work/a" >/dev/null
timeout 60 "$FERRY" train "${args[@]}" --out "$work/run" --stop-at 6 >/dev/null
cols() { cut -d, -f1-4 "$1"; }

resume_from_4() { # what
	local rc=0
	timeout 60 "$FERRY" train --resume "$work/bad" >"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" = 0 ] || fail "$1: resume failed ($rc): $(cat "$work/err")"
	[ "$(wc -l <"$work/err")" = 1 ] || fail "$1: not one line on stderr: $(cat "$work/err")"
	grep -q 'skipping the checkpoint of step 6: .*model_00000006.bin' "$work/err" ||
		fail "$1: the skipped checkpoint is not named: $(cat "$work/err")"
	grep -q 'continuing .* from step 4 ' "$work/out" || fail "$1: did not resume from step 4"
	diff <(cols "$work/a/log.csv") <(cols "$work/bad/log.csv") >&2 ||
		fail "$1: losses differ from the uninterrupted run"
	cmp "$work/a/model_00000012.bin" "$work/bad/model_00000012.bin" || fail "$1: final weights differ"
	cmp "$work/a/state_00000012.bin" "$work/bad/state_00000012.bin" || fail "$1: final state differs"
	echo "ok: $1: $(cat "$work/err")"
}
reset() { rm -rf "$work/bad"; cp -r "$work/run" "$work/bad"; }

reset
truncate -s -4096 "$work/bad/model_00000006.bin"
resume_from_4 "truncated newest model file"
reset
/usr/bin/python3 -c "
import sys, numpy as np
b = bytearray(open(sys.argv[1], 'rb').read())
np.frombuffer(b, dtype=np.float32, offset=1024)[100] = np.nan
open(sys.argv[1], 'wb').write(b)" "$work/bad/model_00000006.bin"
resume_from_4 "a NaN weight in the newest model file"

# none verifies: one line, non-zero, nothing trained
reset
for f in "$work/bad"/model_*.bin; do truncate -s -4 "$f"; done
rc=0
timeout 60 "$FERRY" train --resume "$work/bad" >"$work/out" 2>"$work/err" || rc=$?
[ "$rc" != 0 ] || fail "resume with no checkpoint that verifies succeeded"
[ "$(wc -l <"$work/err")" = 1 ] || fail "not one line: $(cat "$work/err")"
grep -q 'none of its 3 checkpoint(s) verifies' "$work/err" || fail "unclear: $(cat "$work/err")"
! grep -q '^step' "$work/out" || fail "trained with no checkpoint that verifies"
pass "--resume skips a damaged newest checkpoint"
