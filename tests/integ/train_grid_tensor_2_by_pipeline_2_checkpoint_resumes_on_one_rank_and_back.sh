#!/usr/bin/env bash
# A checkpoint of the 3D grid is whole (issue 13): on save the tensor shards and the stages (and
# ZeRO's slices) are gathered into one llm.c model file and one state file, so
# - a tensor 2 x pipeline 2 run on 4 ranks stopped after step 5 resumes on 1 rank;
# - a 1-rank run stopped after step 5 resumes on tensor 2 x pipeline 2;
# - a data 2 x pipeline 2 run at ZeRO 1 stopped after step 5 resumes on tensor 2 x pipeline 2;
# each on the uninterrupted 1-rank run's loss curve (every loss within 1e-4 relative, the
# validation losses run through the grid within 1e-4, the final weights within 1e-4 and moments
# within 1e-5 absolute), and the grid's model file has the 1-rank file's header and size. (Step
# 5's validation loss of data 2 is not compared: each data rank evaluates --val-batches of its
# own, so D ranks average D times as many batches as 1 rank, with or without a pipeline.)
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --val "$work/data/val_*.bin" --val-batches 2
	--layers 3 --heads 2 --dim 16 --seq-len 16 --batch 2 --total-batch-tokens 128
	--steps 10 --warmup 2 --lr 3e-3 --seed 7 --eval-every 5 --ckpt-every 1000 --threads 1
	--loader-block-bytes 4096 --loader-window-blocks 3)
grid=(--tensor-parallel 2 --pipeline-parallel 2)
# ok WHAT OUT COMMAND...: runs it, stdout and stderr into $work/OUT
ok() {
	local what=$1 out=$work/$2
	shift 2
	timeout 120 "$@" >"$out" 2>&1 || fail "$what failed: $(tail -3 "$out")"
}

ok "the uninterrupted 1-rank run" a.out "$FERRY" train "${args[@]}" --out "$work/a"
ok "tensor 2 x pipeline 2 to step 5" g1.out "${mpirun[@]}" -np 4 "$FERRY" train "${args[@]}" \
	"${grid[@]}" --out "$work/g" --stop-at 5
grep -q "layout: data 1 x tensor 2 x pipeline 2" "$work/g1.out" || fail "not on the grid: $(head -3 "$work/g1.out")"
[ -f "$work/g/state_00000005.bin" ] || fail "the grid run wrote no whole state file at step 5"
cmp -s <(head -c 1024 "$work/a/model_00000010.bin") <(head -c 1024 "$work/g/model_00000005.bin") ||
	fail "the grid's model file header differs from the 1-rank one's"
[ "$(stat -c %s "$work/g/model_00000005.bin")" = "$(stat -c %s "$work/a/model_00000010.bin")" ] ||
	fail "the grid's model file is not the whole model"
ok "resuming the grid's checkpoint on 1 rank" g2.out "$FERRY" train --resume "$work/g"
grep -q "continuing .* from step 5 to 10" "$work/g2.out" || fail "1 rank did not resume at 5"

ok "the 1-rank run to step 5" one1.out "$FERRY" train "${args[@]}" --out "$work/one" --stop-at 5
ok "resuming the 1-rank checkpoint on the grid" one2.out "${mpirun[@]}" -np 4 "$FERRY" train \
	--resume "$work/one" "${grid[@]}"
grep -q "layout: data 1 x tensor 2 x pipeline 2" "$work/one2.out" || fail "the resume is not on the grid"

ok "data 2 x pipeline 2 at ZeRO 1 to step 5" z1.out "${mpirun[@]}" -np 4 "$FERRY" train "${args[@]}" \
	--pipeline-parallel 2 --zero-stage 1 --out "$work/z" --stop-at 5
ok "resuming it on the grid" z2.out "${mpirun[@]}" -np 4 "$FERRY" train --resume "$work/z" "${grid[@]}"

"$PY" - "$work" <<'PY' || fail "a run resumed on another layout left the loss curve (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def log(run):
    return {int(r["step"]): r for r in csv.DictReader(open(f"{work}/{run}/log.csv"))}
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000010.bin", dtype=np.float32)[256:]
a, wa = log("a"), weights("a")
ma = train_ckpt.moments(f"{work}/a", 10, wa.size)
ok = True
for run, what, vsteps in (("g", "tensor 2 x pipeline 2 -> 1 rank", (5, 10)),
                          ("one", "1 rank -> tensor 2 x pipeline 2", (5, 10)),
                          ("z", "data 2 x pipeline 2 ZeRO 1 -> tensor 2 x pipeline 2", (10,))):
    l = log(run)
    if sorted(l) != list(range(1, 11)):
        print(f"{what}: logged steps {sorted(l)}, want 1-10"); ok = False; continue
    rel = train_ckpt.worst(abs(float(l[s]["loss"]) - float(a[s]["loss"])) / abs(float(a[s]["loss"])) for s in range(1, 11))
    vrel = train_ckpt.worst(abs(float(l[s]["val_loss"]) - float(a[s]["val_loss"])) / abs(float(a[s]["val_loss"])) for s in vsteps)
    w = weights(run)
    dw = float(np.abs(w - wa).max())
    dm = float(np.abs(train_ckpt.moments(f"{work}/{run}", 10, w.size) - ma).max())
    print(f"{what}: largest loss difference {rel:.3g}, validation {vrel:.3g} relative (limit 1e-4); "
          f"weights {dw:.3g} (limit 1e-4), moments {dm:.3g} (limit 1e-5) absolute")
    ok &= rel <= 1e-4 and vrel <= 1e-4 and dw <= 1e-4 and dm <= 1e-5
sys.exit(0 if ok else 1)
PY
pass "a tensor 2 x pipeline 2 checkpoint resumes on 1 rank, a 1-rank and a ZeRO pipeline one on the grid"
