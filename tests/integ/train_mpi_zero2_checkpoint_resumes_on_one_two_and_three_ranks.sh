#!/usr/bin/env bash
# A ZeRO-2 run keeps each rank's slice of the optimizer state, and its checkpoint keeps one
# shard file per rank beside a manifest (train/ckpt.c), so the run resumes on another world size
# and another stage, each rank reading the slices it needs from the old shards. A run of 2 MPI ranks (batch 4 each, 24 samples a step:
# 3 micro-batches a rank) at --zero-stage 2 stops after step 15 with a checkpoint:
# - resumed on 2 ranks at stage 2 it equals the uninterrupted 2-rank stage-2 run bit for bit
#   (losses, lr, grad norms in log.csv; final weights and optimizer state byte for byte);
# - resumed on 1 rank (6 micro-batches a step) and on 3 ranks at stage 1 and at stage 2 (2 a
#   rank) its losses of steps 16-30 stay within 1e-4 relative of the uninterrupted run's and
#   its final weights and moments within 1e-4 (max |difference|; float rounding of another
#   reduction order only), and steps 1-15 of its log are the checkpointed run's, unchanged.
# The model has 12325 parameters, no multiple of 2 or 3: the last slice is short on both.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 1 --dim 17 --seq-len 33 --batch 4
	--total-batch-tokens 792 --steps 30 --warmup 3 --lr 3e-3 --seed 11 --eval-every 0
	--ckpt-every 1000 --threads 1 --loader-block-bytes 4096 --loader-window-blocks 3)
cols() { cut -d, -f1-4 "$1"; }

"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/a" >"$work/a.out" ||
	fail "the uninterrupted 2-rank run failed: $(tail -3 "$work/a.out")"
"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/b" --stop-at 15 \
	>"$work/b1.out" || fail "the 2-rank run to step 15 failed: $(tail -3 "$work/b1.out")"
[ -f "$work/b/DONE_00000015" ] || fail "no complete checkpoint at step 15"
grep -q "3 micro-step(s) per step" "$work/b1.out" || fail "2 ranks did not take 3 micro-batches"
for run in one three1 three2; do
	cp -a "$work/b" "$work/$run"
	rm -f "$work/$run/.ferry-train.lock"
done

# on 2 ranks at stage 2: bit for bit
"${mpirun[@]}" -np 2 "$FERRY" train --resume "$work/b" --zero-stage 2 >"$work/b2.out" ||
	fail "resuming on 2 ranks failed: $(tail -3 "$work/b2.out")"
diff <(cols "$work/a/log.csv") <(cols "$work/b/log.csv") >&2 || fail "2 ranks resumed: losses differ"
cmp "$work/a/model_00000030.bin" "$work/b/model_00000030.bin" || fail "2 ranks resumed: weights differ"
cmp "$work/a/manifest_00000030.txt" "$work/b/manifest_00000030.txt" ||
	fail "2 ranks resumed: manifest (state and shard hashes) differs"
for r in 0 1; do
	cmp "$work/a/shard_00000030_0000$r.bin" "$work/b/shard_00000030_0000$r.bin" ||
		fail "2 ranks resumed: shard $r differs"
done
echo "ok: resumed on 2 ranks at ZeRO stage 2, bit for bit"

# on 1 rank, and on 3 ranks at stages 1 and 2: the same curve
"$FERRY" train --resume "$work/one" >"$work/one.out" 2>"$work/one.err" ||
	fail "resuming on 1 rank failed: $(cat "$work/one.err")"
grep -q "1 rank(s), 6 micro-step(s) per step" "$work/one.out" ||
	fail "1 rank did not take 6 micro-batches a step: $(head -2 "$work/one.out")"
for z in 1 2; do
	"${mpirun[@]}" -np 3 "$FERRY" train --resume "$work/three$z" --zero-stage $z \
		>"$work/three$z.out" 2>"$work/three$z.err" ||
		fail "resuming on 3 ranks at stage $z failed: $(tail -3 "$work/three$z.err")"
	grep -q "3 rank(s), 2 micro-step(s) per step" "$work/three$z.out" ||
		fail "3 ranks did not take 2 micro-batches a step: $(head -2 "$work/three$z.out")"
	grep -q "(ZeRO stage $z over 3 rank(s))" "$work/three$z.out" ||
		fail "3 ranks: no memory line for stage $z: $(head -3 "$work/three$z.out")"
done
"$PY" - "$work" <<'PY' || fail "resumed on another world size, the run went elsewhere (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def losses(run):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))}
def weights(run):
    return np.fromfile(f"{work}/{run}/model_00000030.bin", dtype=np.float32)[256:]
def moments(run, n):
    return train_ckpt.moments(f"{work}/{run}", 30, n)
a, wa = losses("a"), weights("a")
ma = moments("a", wa.size)
ok = True
for run, what in (("one", "1 rank"), ("three1", "3 ranks at ZeRO 1"), ("three2", "3 ranks at ZeRO 2")):
    l = losses(run)
    if sorted(l) != list(range(1, 31)):
        print(f"{what}: logged steps {sorted(l)[:3]}... ({len(l)}), want 1-30"); ok = False; continue
    rel = np.array([abs(l[s] - a[s]) / abs(a[s]) for s in range(16, 31)])
    head = train_ckpt.worst(abs(l[s] - a[s]) for s in range(1, 16))
    w = weights(run)
    dw = float(np.abs(wa - w).max())
    dm = float(np.abs(ma - moments(run, w.size)).max())
    print(f"resumed on {what}: steps 16-30 loss max relative difference {rel.max():.3g} "
          f"(step {16 + int(rel.argmax())}), final weights max |difference| {dw:.3g} "
          f"(max |w| {float(np.abs(wa).max()):.3g}), moments {dm:.3g}; steps 1-15 {head:.3g}")
    ok &= bool(rel.max() <= 1e-4) and dw < 1e-4 and dm < 1e-4 and head == 0
sys.exit(0 if ok else 1)
PY
pass "a 2-rank ZeRO-2 checkpoint resumes bit for bit on 2 ranks and on the same curve on 1 and 3"
