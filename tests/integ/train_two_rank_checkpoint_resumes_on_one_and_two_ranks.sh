#!/usr/bin/env bash
# A checkpoint keeps a global position in a sample order that is the same for every world size,
# so a run resumes on another number of ranks and continues the same loss curve. Here a run of
# 2 MPI ranks (batch 40 each, 80 samples a step) stops after step 35 with a checkpoint:
# - resumed on 2 ranks it equals the uninterrupted 2-rank run bit for bit (losses, lr, grad
#   norms in log.csv; final weights and optimizer state byte for byte);
# - resumed on 1 rank (batch 40, accumulating 2 micro-batches for the same 80 samples) its
#   losses of steps 36-70 stay within 1e-4 relative of the uninterrupted run's, and its final
#   weights within 1e-4 (max |difference|; float rounding of another reduction order only);
# - resumed on 3 ranks (80 samples do not split into 3 x 40) it is refused with one line.
# An epoch is about 56 steps: the resumed part crosses into epoch 1. The order's window (192
# samples) is no multiple of 80, so batches straddling two windows are read as well.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 40
	--steps 70 --warmup 4 --lr 3e-3 --seed 9 --eval-every 0 --ckpt-every 1000 --threads 1
	--loader-block-bytes 4096 --loader-window-blocks 3)
cols() { cut -d, -f1-4 "$1"; }

"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --out "$work/a" >"$work/a.out" ||
	fail "the uninterrupted 2-rank run failed: $(tail -3 "$work/a.out")"
"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --out "$work/b" --stop-at 35 >"$work/b1.out" ||
	fail "the 2-rank run to step 35 failed: $(tail -3 "$work/b1.out")"
[ -f "$work/b/state_00000035.bin" ] || fail "no checkpoint at step 35"
cp -a "$work/b" "$work/one"
cp -a "$work/b" "$work/three"
rm -f "$work/one/.ferry-train.lock" "$work/three/.ferry-train.lock"

# on 2 ranks: bit for bit
"${mpirun[@]}" -np 2 "$FERRY" train --resume "$work/b" >"$work/b2.out" ||
	fail "resuming on 2 ranks failed: $(tail -3 "$work/b2.out")"
diff <(cols "$work/a/log.csv") <(cols "$work/b/log.csv") >&2 || fail "2 ranks resumed: losses differ"
cmp "$work/a/model_00000070.bin" "$work/b/model_00000070.bin" || fail "2 ranks resumed: weights differ"
cmp "$work/a/state_00000070.bin" "$work/b/state_00000070.bin" || fail "2 ranks resumed: state differs"
echo "ok: resumed on 2 ranks, bit for bit"

# on 1 rank: the same curve
"$FERRY" train --resume "$work/one" >"$work/one.out" 2>"$work/one.err" ||
	fail "resuming on 1 rank failed: $(cat "$work/one.err")"
grep -q "1 rank(s), 2 micro-step(s) per step" "$work/one.out" ||
	fail "1 rank did not take 2 micro-batches a step: $(head -2 "$work/one.out")"
"$PY" - "$work" <<'PY' || fail "resumed on 1 rank, the loss curve went elsewhere (see above)"
import csv, sys, numpy as np
work = sys.argv[1]
def losses(run):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))}
a, one = losses("a"), losses("one")
steps = list(range(36, 71))
if any(s not in one for s in steps) or len(one) != 70:
    print(f"1 rank logged {len(one)} steps, want 70"); sys.exit(1)
rel = np.array([abs(one[s] - a[s]) / abs(a[s]) for s in steps])
head = np.array([abs(one[s] - a[s]) for s in range(1, 36)])  # numpy max keeps a NaN: never 0
wa, w1 = (np.fromfile(f"{work}/{r}/model_00000070.bin", dtype=np.float32)[256:] for r in ("a", "one"))
dw = float(np.abs(wa - w1).max())
print(f"resumed on 1 rank: steps 36-70 loss max relative difference {rel.max():.3g} "
      f"(step {steps[int(rel.argmax())]}), final weights max |difference| {dw:.3g} "
      f"(max |w| {float(np.abs(wa).max()):.3g}); steps 1-35 max |difference| {head.max():.3g}")
sys.exit(0 if rel.max() <= 1e-4 and dw < 1e-4 and head.max() == 0 else 1)
PY

# on 3 ranks: 80 samples a step do not split into 3 ranks of 40
rc=0
"${mpirun[@]}" -np 3 "$FERRY" train --resume "$work/three" >"$work/three.out" 2>"$work/three.err" || rc=$?
[ "$rc" != 0 ] || fail "resuming on 3 ranks with 80 samples a step was not refused"
grep -q "tokens a step are not a multiple of batch\*seq-len\*data ranks" "$work/three.err" ||
	fail "resuming on 3 ranks: no clear line: $(head -3 "$work/three.err")"
pass "a 2-rank checkpoint resumes bit for bit on 2 ranks and on the same curve on 1 rank"
