#!/usr/bin/env bash
# A pipeline's checkpoint is one whole llm.c model file and state file (train/pp.c gathers the
# stages' layers and moments on save, and scatters a whole model on load), so the layout may
# change at a resume:
# - a run of `--pipeline-parallel 2` on 2 MPI ranks stopped after step 5 resumes on 1 rank;
# - a 1-rank run stopped after step 5 resumes as a pipeline of 2 stages;
# each continues the uninterrupted 1-rank run's loss curve: steps 1-5 of its log unchanged,
# steps 6-10 within 1e-4 relative, the validation losses (run through the stages, pp_eval_loss)
# within 1e-4 relative, the final weights within 1e-4 and the Adam moments
# within 1e-5 absolute.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --val "$work/data/val_*.bin" --val-batches 2
	--layers 3 --heads 2 --dim 16 --seq-len 16 --batch 2 --total-batch-tokens 128
	--steps 10 --warmup 2 --lr 3e-3 --seed 7 --eval-every 5 --ckpt-every 1000 --threads 1
	--loader-block-bytes 4096 --loader-window-blocks 3)
# ok WHAT OUT COMMAND...: runs it, stdout and stderr into $work/OUT
ok() {
	local what=$1 out=$work/$2
	shift 2
	"$@" >"$out" 2>&1 || fail "$what failed: $(tail -3 "$out")"
}

ok "the uninterrupted 1-rank run" a.out "$FERRY" train "${args[@]}" --out "$work/a"
# pipeline 2 to step 5, then 1 rank
ok "the pipeline-2 run to step 5" pp1.out "${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" \
	--pipeline-parallel 2 --out "$work/pp" --stop-at 5
[ -f "$work/pp/state_00000005.bin" ] || fail "the pipeline run wrote no checkpoint at step 5"
ok "resuming the pipeline's checkpoint on 1 rank" pp2.out "$FERRY" train --resume "$work/pp"
grep -q "continuing .* from step 5 to 10" "$work/pp2.out" || fail "1 rank did not resume at 5"
# 1 rank to step 5, then pipeline 2
ok "the 1-rank run to step 5" one1.out "$FERRY" train "${args[@]}" --out "$work/one" --stop-at 5
ok "resuming the 1-rank checkpoint on pipeline 2" one2.out "${mpirun[@]}" -np 2 "$FERRY" train \
	--resume "$work/one" --pipeline-parallel 2
grep -q "pipeline of 2 stages" "$work/one2.out" || fail "the resumed run is not a pipeline"

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
for run, what in (("pp", "pipeline 2 -> 1 rank"), ("one", "1 rank -> pipeline 2")):
    l = log(run)
    if sorted(l) != list(range(1, 11)):
        print(f"{what}: logged steps {sorted(l)}, want 1-10"); ok = False; continue
    rel = train_ckpt.worst(abs(float(l[s]["loss"]) - float(a[s]["loss"])) / abs(float(a[s]["loss"])) for s in range(1, 11))
    vrel = train_ckpt.worst(abs(float(l[s]["val_loss"]) - float(a[s]["val_loss"])) / abs(float(a[s]["val_loss"])) for s in (5, 10))
    w = weights(run)
    dw = float(np.abs(w - wa).max())
    dm = float(np.abs(train_ckpt.moments(f"{work}/{run}", 10, w.size) - ma).max())
    print(f"{what}: largest loss difference {rel:.3g}, validation {vrel:.3g} relative (limit 1e-4); "
          f"weights {dw:.3g} (limit 1e-4), moments {dm:.3g} (limit 1e-5) absolute")
    ok &= rel <= 1e-4 and vrel <= 1e-4 and dw <= 1e-4 and dm <= 1e-5
sys.exit(0 if ok else 1)
PY
pass "a pipeline-2 checkpoint resumes on 1 rank and a 1-rank one on pipeline 2"
