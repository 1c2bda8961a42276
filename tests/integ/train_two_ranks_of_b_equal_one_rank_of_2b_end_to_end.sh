#!/usr/bin/env bash
# The same samples whatever the layout, end to end in `ferry train`: 2 MPI ranks of batch B, 1
# rank of batch 2B and 1 rank of batch B accumulating 2 micro-batches read the same global batch
# at every step, so their losses agree to float rounding (1e-4 relative at most, every one of 10
# steps) and so do their final weights (max |difference| below 1e-5, weights up to about 1).
# The order's window (3 blocks of 64 samples: 192) is no multiple of the global micro-batch
# (10), so some batches straddle two windows and are read a sample at a time. Validation (3
# batches of B every 5 steps) is the same set too: the 2 ranks of B read batches 0 and 2 and
# batch 1 of the 1-rank-of-B order between them, so their validation losses equal the
# accumulating run's to 1e-5 relative (they differed by 6e-4 while each rank read 3 batches of
# its own).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --steps 10
	--warmup 2 --lr 3e-3 --seed 5 --eval-every 5 --val "$work/data/val_*.bin" --val-batches 3
	--ckpt-every 0 --threads 1 --loader-block-bytes 4096 --loader-window-blocks 3)
"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --batch 5 --out "$work/two" >"$work/two.out" ||
	fail "2 ranks of batch 5 failed: $(tail -3 "$work/two.out")"
"$FERRY" train "${args[@]}" --batch 10 --out "$work/one" >"$work/one.out" ||
	fail "1 rank of batch 10 failed: $(tail -3 "$work/one.out")"
"$FERRY" train "${args[@]}" --batch 5 --total-batch-tokens 320 --out "$work/accum" \
	>"$work/accum.out" || fail "1 rank of batch 5 x 2 failed: $(tail -3 "$work/accum.out")"
grep -q "2 micro-step(s) per step" "$work/accum.out" || fail "the accumulating run did not accumulate"

"$PY" - "$work" <<'PY' || fail "the layouts trained on different samples (see above)"
import csv, sys, numpy as np
work = sys.argv[1]
def losses(run):
    rows = list(csv.DictReader(open(f"{work}/{run}/log.csv")))
    return np.array([float(r["loss"]) for r in rows])
def val(run):
    rows = list(csv.DictReader(open(f"{work}/{run}/log.csv")))
    return np.array([float(r["val_loss"]) for r in rows if r["val_loss"]])
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000010.bin", dtype=np.float32)[256:]
ok = True
ref, wref = losses("one"), weights("one")
for run in ("two", "accum"):
    l, w = losses(run), weights(run)
    if l.shape != ref.shape or l.size != 10:
        print(f"{run}: {l.size} steps logged, 1 rank of 2B {ref.size}"); ok = False; continue
    rel = np.abs(l - ref) / np.abs(ref)
    dw = float(np.abs(w - wref).max())
    print(f"{run} vs 1 rank of 2B: loss max relative difference {rel.max():.3g} "
          f"(step {int(rel.argmax()) + 1}), final weights max |difference| {dw:.3g} "
          f"(max |w| {float(np.abs(wref).max()):.3g}, {w.size} parameters)")
    ok &= bool(rel.max() <= 1e-4) and dw < 1e-5
va, vb = val("two"), val("accum")
if va.size != 2 or vb.size != 2:
    print(f"validation losses logged: 2 ranks {va.size}, 1 rank of B x 2 {vb.size}; want 2 each")
    ok = False
else:
    vrel = float((np.abs(va - vb) / np.abs(vb)).max())
    print(f"two vs accum validation (batches of B): max relative difference {vrel:.3g} (1e-5)")
    ok &= vrel <= 1e-5
sys.exit(0 if ok else 1)
PY
pass "2 ranks of B, 1 rank of 2B and 1 rank of B x 2 micro-batches train alike"
