#!/usr/bin/env bash
# A run whose only checkpoint is damaged (a flipped byte in the state file, a truncated model
# file, a foreign file in place of the model) refuses to resume with a one-line error and a
# non-zero exit; it never trains on from garbage. (With an older checkpoint that verifies,
# --resume goes back to it: train_resume_skips_a_damaged_newest_checkpoint.sh.)
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
"$FERRY" train --data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 16 \
	--batch 2 --steps 4 --warmup 1 --eval-every 0 --ckpt-every 2 --out "$work/run" >/dev/null

expect_refusal() { # what
	local rc=0
	"$FERRY" train --resume "$work/bad" >"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" != 0 ] || fail "$1: resume succeeded"
	[ "$(wc -l <"$work/err")" = 1 ] || fail "$1: error is not one line: $(cat "$work/err")"
	! grep -q '^step' "$work/out" || fail "$1: trained anyway"
	echo "ok: $1: $(cat "$work/err")"
}
reset() { rm -rf "$work/bad"; cp -r "$work/run" "$work/bad"; rm "$work/bad"/*_00000002.bin; }

reset
/usr/bin/python3 -c "
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=1; open(p,'wb').write(b)" \
	"$work/bad/state_00000004.bin"
expect_refusal "flipped byte in the state file"
reset
truncate -s -4 "$work/bad/model_00000004.bin"
expect_refusal "truncated model file"
reset
head -c 5000 /dev/urandom >"$work/bad/model_00000004.bin"
expect_refusal "random bytes as the model file"
reset
printf 'not a state file' >"$work/bad/state_00000004.bin"
expect_refusal "text as the state file"
pass "malformed checkpoints are refused"
