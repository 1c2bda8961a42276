#!/usr/bin/env bash
# The full grid (issue 13): a pipeline's stages split over tensor ranks, and a pipeline's
# optimizer state sharded by ZeRO within each stage's data group, train like 1 rank with the
# same global batch. Over 10 steps of 4 micro-batches a step, every loss and gradient norm within
# 1e-4 relative of the 1-rank run's, the final weights (the gathered model file) within 1e-4 and the Adam
# moments (the gathered state file) within 1e-5 absolute (see
# train_tp_checkpoint_resumes_on_one_rank_and_back.sh for why not tighter), for:
# - tensor 2 x pipeline 2 on 4 ranks: each stage's blocks all-reduce over its tensor group, the
#   stream goes from tensor rank t of a stage to tensor rank t of the next, wte's gradient is
#   summed between the first and last stage of each tensor rank;
# - data 2 x pipeline 2 on 4 ranks at --zero-stage 1 and 2: each stage's moments (and at 2 its
#   gradients) sliced over its data group, the checkpoint gathered whole all the same;
# - data 2 x tensor 2 x pipeline 2 on 8 ranks at --zero-stage 1 (all three at once).
# It also checks the layout lines and the tensor group's payload on rank 0 (stage 0's 2 of the
# 3 layers: 2 x 4 all-reduces of B*T*C floats per micro-batch, and the norm's float).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 3 --heads 2 --dim 16 --seq-len 16 --batch 2
	--total-batch-tokens 128 --steps 10 --warmup 2 --lr 3e-3 --seed 5 --eval-every 0
	--ckpt-every 1000 --threads 1 --loader-block-bytes 4096 --loader-window-blocks 3)

# run NAME NP [OPTION...]
run() {
	local name=$1 np=$2
	shift 2
	timeout 120 "${mpirun[@]}" -np "$np" "$FERRY" train "${args[@]}" --out "$work/$name" "$@" \
		>"$work/$name.out" 2>&1 || fail "$name on $np rank(s) failed: $(tail -3 "$work/$name.out")"
}
run one 1
run tp2pp2 4 --tensor-parallel 2 --pipeline-parallel 2
run dp2pp2z1 4 --pipeline-parallel 2 --zero-stage 1
run dp2pp2z2 4 --pipeline-parallel 2 --zero-stage 2
run dp2tp2pp2 8 --tensor-parallel 2 --pipeline-parallel 2 --zero-stage 1
# want NAME LINE: the run said LINE
want() {
	grep -q -- "$2" "$work/$1.out" || fail "$1 did not say '$2': $(head -5 "$work/$1.out")"
}
want tp2pp2 "layout: data 1 x tensor 2 x pipeline 2"
want tp2pp2 "rank 0 is stage 0, layers 0-1"
want tp2pp2 "rank 3 is stage 1, layers 2-2"
# 2 layers x 4 all-reduces x (2 x 16 x 16 floats) x 4 bytes x 4 micro-batches + the norm's 4
want tp2pp2 "| tensor comm 65540 bytes"
want dp2pp2z1 "layout: data 2 x tensor 1 x pipeline 2"
want dp2pp2z1 "ZeRO stage 1 over 2 rank(s)"
want dp2pp2z2 "ZeRO stage 2 over 2 rank(s)"
want dp2tp2pp2 "layout: data 2 x tensor 2 x pipeline 2"
compgen -G "$work/dp2pp2z*/shard_*" >/dev/null && fail "a pipeline's ZeRO checkpoint was written in shards"

"$PY" - "$work" <<'PY' || fail "a grid run went elsewhere than the 1-rank run (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def losses(run):
    return [float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))]
def norms(run):
    return [float(r["grad_norm"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))]
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000010.bin", dtype=np.float32)[256:]
a, wa = losses("one"), weights("one")
ma = train_ckpt.moments(f"{work}/one", 10, wa.size)
ok = True
for run, what in (("tp2pp2", "tensor 2 x pipeline 2"),
                  ("dp2pp2z1", "data 2 x pipeline 2, ZeRO 1"),
                  ("dp2pp2z2", "data 2 x pipeline 2, ZeRO 2"),
                  ("dp2tp2pp2", "data 2 x tensor 2 x pipeline 2, ZeRO 1")):
    b, wb = losses(run), weights(run)
    if len(b) != 10 or wb.size != wa.size:
        print(f"{what}: {len(b)} steps, {wb.size} weights; want 10 and {wa.size}"); ok = False; continue
    rel = train_ckpt.worst(abs(x - y) / abs(x) for x, y in zip(a, b))
    nrel = train_ckpt.worst(abs(x - y) / abs(x) for x, y in zip(norms("one"), norms(run)))
    dw = float(np.abs(wa - wb).max())
    dm = float(np.abs(train_ckpt.moments(f"{work}/{run}", 10, wb.size) - ma).max())
    print(f"{what} vs 1 rank: largest loss difference {rel:.3g}, norm {nrel:.3g} relative (limit 1e-4), "
          f"weights {dw:.3g} (limit 1e-4), moments {dm:.3g} (limit 1e-5) absolute over {wa.size} parameters")
    ok &= rel <= 1e-4 and nrel <= 1e-4 and dw <= 1e-4 and dm <= 1e-5
sys.exit(0 if ok else 1)
PY
pass "tensor x pipeline, ZeRO on a pipeline's stages and data x tensor x pipeline equal the 1-rank run"
