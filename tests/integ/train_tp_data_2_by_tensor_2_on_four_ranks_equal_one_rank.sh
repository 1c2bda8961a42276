#!/usr/bin/env bash
# The grid (issue 13): data 2 x tensor 2 on 4 MPI ranks, batch B a data rank, trains like 1 rank
# of batch 2B (the same global batch each step), at ZeRO stage 0 and 2 (ZeRO shards within the
# data group, each tensor rank's slices of its own shards) and at stage 1 with the data group's
# reduction overlapped with backward in 4 KiB buckets (--overlap on): over 10 steps every loss within
# 1e-4 relative, the final weights within 1e-4 and the optimizer state (gathered over the data
# group, then the tensor group, into the state file a 1-rank run writes) within 1e-6. Rank 3
# sits at data 1, tensor 1: tensor ranks are adjacent (rank = (p*D + d)*T + t).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 4 --dim 24 --seq-len 32 --steps 10
	--warmup 2 --lr 3e-3 --seed 5 --eval-every 0 --ckpt-every 0 --threads 1
	--loader-block-bytes 4096 --loader-window-blocks 3)

"$FERRY" train "${args[@]}" --batch 8 --out "$work/one" >"$work/one.out" ||
	fail "1 rank failed: $(tail -3 "$work/one.out")"
for z in 0 2 1o; do
	more=(--zero-stage "${z%o}")
	[ "$z" = 1o ] && more+=(--overlap on --bucket-kib 4)
	"${mpirun[@]}" -np 4 "$FERRY" train "${args[@]}" --batch 4 --tensor-parallel 2 \
		"${more[@]}" --verbose --out "$work/grid$z" >"$work/grid$z.out" \
		2>"$work/grid$z.err" || fail "data 2 x tensor 2, ${more[*]} failed: $(tail -3 "$work/grid$z.err")"
	grep -q "^ferry train: layout: data 2 x tensor 2 x pipeline 1; rank 0 = data 0, tensor 0, stage 0$" \
		"$work/grid$z.out" || fail "no layout line: $(head -3 "$work/grid$z.out")"
done
# overlapped: several buckets a step (the step line's count), not one reduction after backward
grep -qE "comm [0-9.]+ of [0-9.]+ ms, ([2-9]|[1-9][0-9]+) bucket" "$work/grid1o.out" ||
	fail "--overlap on reduced in one bucket: $(grep -m1 '^step' "$work/grid1o.out")"
# the tensor ranks of one data rank read the same batch, the data ranks different ones
batch() { grep "^rank $1 step 1:" "$work/grid0.err" | awk '{print $NF}'; }
[ -n "$(batch 0)" ] && [ "$(batch 0)" = "$(batch 1)" ] && [ "$(batch 2)" = "$(batch 3)" ] &&
	[ "$(batch 0)" != "$(batch 2)" ] ||
	fail "ranks 0..3 read batches $(batch 0) $(batch 1) $(batch 2) $(batch 3): want a a b b"

"$PY" - "$work" <<'PY' || fail "data 2 x tensor 2 trained otherwise than 1 rank (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def losses(run):
    return np.array([float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))])
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000010.bin", dtype=np.float32)[256:]
ref, wref = losses("one"), weights("one")
mref = train_ckpt.moments(f"{work}/one", 10, wref.size)
ok = ref.size == 10
for z in ("0", "2", "1o"):
    run = f"grid{z}"
    l, w = losses(run), weights(run)
    if l.size != 10 or w.size != wref.size:
        print(f"{run}: {l.size} steps, {w.size} weights"); ok = False; continue
    mo = train_ckpt.moments(f"{work}/{run}", 10, w.size)
    rel = np.abs(l - ref) / np.abs(ref)
    dw, dm = float(np.abs(w - wref).max()), float(np.abs(mo - mref).max())
    print(f"data 2 x tensor 2, ZeRO {z}, vs 1 rank of 2B: largest loss relative difference "
          f"{rel.max():.3g} (step {int(rel.argmax()) + 1}, tolerance 1e-4), final weights "
          f"{dw:.3g} (1e-4), optimizer state {dm:.3g} (1e-6)")
    ok &= bool(rel.max() <= 1e-4) and dw <= 1e-4 and dm <= 1e-6
sys.exit(0 if ok else 1)
PY
pass "data 2 x tensor 2 on 4 ranks equals 1 rank of 2B, at ZeRO 0 and 2 and overlapped at 1"
