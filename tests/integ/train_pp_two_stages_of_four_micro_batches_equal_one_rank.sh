#!/usr/bin/env bash
# Pipeline parallel (train/pp.c): `--pipeline-parallel 2` on 2 MPI ranks, 4 micro-batches a step
# in the 1F1B schedule, trains on the same global batch as 1 rank accumulating the same 4
# micro-batches, so over 10 steps every step's loss is within 1e-4 relative of the 1-rank run's
# and the final weights (the gathered model file) within 1e-4 and Adam moments within 1e-5 absolute. They
# are not bit for bit: wte's gradient is summed from the two stages' halves (the output
# projection's and the embedding's) in another order than one rank's, and the norm's sum of
# squares is split by stage. The model has 3 layers, so the stages are uneven (2 + 1); a
# pipeline of 3 on 3 ranks (a middle stage that holds neither embedding nor head) and one of 3
# stages with 2 micro-batches (fewer than the stages: warm-up cut short) must match as well, and
# so must 4 stages of a 5-layer model on 4 ranks (two middle stages, 2 + 1 + 1 + 1 layers), and
# data 2 x pipeline 2 on 4 ranks (each pipeline 2 of the 4 micro-batches, the stages' gradients
# averaged over the data group).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 3 --heads 2 --dim 16 --seq-len 16 --batch 2
	--steps 10 --warmup 2 --lr 3e-3 --seed 5 --eval-every 0 --ckpt-every 1000 --threads 1
	--loader-block-bytes 4096 --loader-window-blocks 3)

# run NAME NP P MICRO [OPTION...]: P stages on NP ranks (1: no pipeline), MICRO micro-batches
# of 2 x 16 in all, NP / P data ranks sharing them
run() {
	local name=$1 np=$2 p=$3 micro=$4 accum=$(($4 * $3 / $2))
	shift 4
	"${mpirun[@]}" -np "$np" "$FERRY" train "${args[@]}" --total-batch-tokens $((micro * 32)) \
		--pipeline-parallel "$p" --out "$work/$name" "$@" >"$work/$name.out" 2>&1 ||
		fail "$name ($p stage(s) on $np rank(s)) failed: $(tail -3 "$work/$name.out")"
	grep -q "$accum micro-step(s) per step" "$work/$name.out" ||
		fail "$name did not take $accum micro-batches a rank: $(head -3 "$work/$name.out")"
}
run one4 1 1 4
run pp2 2 2 4
run pp3 3 3 4
run one2 1 1 2
run pp3m2 3 3 2
run one6l5 1 1 6 --layers 5
run pp4l5 4 4 6 --layers 5
run dp2pp2 4 2 4
for line in "rank 0 is stage 0, layers 0-1" "rank 1 is stage 1, layers 2-2"; do
	grep -q "pipeline of 2 stages: $line" "$work/pp2.out" ||
		fail "no stage layout line '$line': $(head -4 "$work/pp2.out")"
done
grep "bubble" "$work/pp2.out" "$work/pp3.out" || fail "no bubble line"
grep -q "layout: data 2 x tensor 1 x pipeline 2" "$work/dp2pp2.out" ||
	fail "data 2 x pipeline 2 did not run on that layout: $(head -4 "$work/dp2pp2.out")"

"$PY" - "$work" <<'PY' || fail "a pipeline run went elsewhere than the 1-rank run (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def losses(run):
    return [float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))]
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000010.bin", dtype=np.float32)[256:]
ok = True
for one, run, what in (("one4", "pp2", "pipeline 2, 4 micro-batches"),
                       ("one4", "pp3", "pipeline 3, 4 micro-batches"),
                       ("one2", "pp3m2", "pipeline 3, 2 micro-batches"),
                       ("one6l5", "pp4l5", "pipeline 4 of 5 layers, 6 micro-batches"),
                       ("one4", "dp2pp2", "data 2 x pipeline 2, 4 micro-batches")):
    a, b = losses(one), losses(run)
    if len(a) != 10 or len(b) != 10:
        print(f"{what}: {len(b)} steps logged, the 1-rank run {len(a)}; want 10"); ok = False; continue
    rel = train_ckpt.worst(abs(x - y) / abs(x) for x, y in zip(a, b))
    wa, wb = weights(one), weights(run)
    dw = float(np.abs(wa - wb).max()) if wa.size == wb.size else float("inf")
    ma, mb = train_ckpt.moments(f"{work}/{one}", 10, wa.size), train_ckpt.moments(f"{work}/{run}", 10, wb.size)
    dm = float(np.abs(ma - mb).max())
    print(f"{what} vs 1 rank: largest loss difference {rel:.3g} relative (limit 1e-4), "
          f"weights {dw:.3g} (limit 1e-4), moments {dm:.3g} (limit 1e-5) absolute over {wa.size} parameters")
    ok &= rel <= 1e-4 and dw <= 1e-4 and dm <= 1e-5
sys.exit(0 if ok else 1)
PY
pass "pipelines of 2, 3 and 4 stages, and data 2 x pipeline 2, equal the 1-rank run over 10 steps"
