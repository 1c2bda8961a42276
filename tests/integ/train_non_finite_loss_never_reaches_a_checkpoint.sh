#!/usr/bin/env bash
# NaN weights and a diverging run: `--init` of a model file with one NaN weight is refused with
# one line naming the file; a run whose loss goes non-finite (its weights blown up to 1e30, as a
# far too high learning rate leaves them; --lr itself is capped at 10, which Adam survives)
# skips those steps, stops after --max-bad-steps (5) of them in a row with a non-zero exit and one
# line, and writes no checkpoint after the last good step: the finite ones stay (--keep 3).
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 16 --batch 2
	--steps 20 --warmup 1 --eval-every 0 --ckpt-every 2 --keep 3 --seed 5 --threads 1)
timeout 60 "$FERRY" train "${args[@]}" --out "$work/run" --stop-at 6 >/dev/null
# finite: every float after the 1024-byte header, of every model file given
all_finite() {
	/usr/bin/python3 -c "
import sys, numpy as np
sys.exit(0 if all(np.isfinite(np.fromfile(p, dtype=np.float32, offset=1024)).all()
	for p in sys.argv[1:]) else 1)" "$@"
}
edit_weights() { # file python-expression-on-p
	/usr/bin/python3 -c "
import sys, numpy as np
b = bytearray(open(sys.argv[1], 'rb').read())
p = np.frombuffer(b, dtype=np.float32, offset=1024)
$2
open(sys.argv[1], 'wb').write(b)" "$1"
}

# --init of a file with one NaN: one line naming it, nothing trained, no checkpoint
cp "$work/run/model_00000006.bin" "$work/nan.bin"
edit_weights "$work/nan.bin" "p[77] = np.nan"
rc=0
timeout 60 "$FERRY" train "${args[@]}" --init "$work/nan.bin" --out "$work/init" \
	>"$work/out" 2>"$work/err" || rc=$?
[ "$rc" != 0 ] || fail "--init of NaN weights succeeded"
[ "$(wc -l <"$work/err")" = 1 ] || fail "--init of NaN weights: not one line: $(cat "$work/err")"
grep -q "nan.bin: .*not finite" "$work/err" || fail "the refusal does not name the file: $(cat "$work/err")"
! grep -q '^step' "$work/out" || fail "--init of NaN weights trained"
! ls "$work/init"/model_*.bin >/dev/null 2>&1 || fail "--init of NaN weights wrote a checkpoint"
echo "ok: --init: $(cat "$work/err")"

# blown-up weights in the newest checkpoint (finite, so it verifies): every step's loss is
# non-finite from step 7 on
edit_weights "$work/run/model_00000006.bin" "p *= np.float32(1e30)"
all_finite "$work/run"/model_*.bin || fail "the test's blown-up weights are not finite"
sums_before=$(cd "$work/run" && md5sum model_*.bin state_*.bin)
rc=0
timeout 60 "$FERRY" train --resume "$work/run" >"$work/out" 2>"$work/err" || rc=$?
[ "$rc" != 0 ] || fail "a run of non-finite losses exited 0"
[ "$rc" -lt 124 ] || fail "a run of non-finite losses: exit $rc (timeout or crash)"
[ "$(wc -l <"$work/err")" = 1 ] || fail "not one line on stderr: $(cat "$work/err")"
grep -q '5 steps in a row had a non-finite loss' "$work/err" || fail "unclear: $(cat "$work/err")"
[ "$(grep -c 'skipped: non-finite' "$work/out")" = 5 ] ||
	fail "want 5 skipped steps (the default --max-bad-steps) logged: $(cat "$work/out")"
! grep -q '^step     12/' "$work/out" || fail "went on after 5 bad steps"
# the checkpoints of steps 2, 4 and 6 are all there is, unchanged and finite
[ "$(cd "$work/run" && md5sum model_*.bin state_*.bin)" = "$sums_before" ] ||
	fail "the checkpoints changed: $(ls "$work/run")"
all_finite "$work/run"/model_*.bin || fail "a non-finite checkpoint was written"
echo "ok: diverged: $(cat "$work/err")"
pass "non-finite weights and losses never reach a checkpoint"
