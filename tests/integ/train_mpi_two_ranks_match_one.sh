#!/usr/bin/env bash
# Data parallel over MPI: one optimizer step with 2 ranks of batch B gives the same weights as
# 1 rank of batch 2B (to float tolerance; the gradients are averaged by an all-reduce), and in
# `ferry train` each rank reads different batches.
source "$(dirname "$0")/train_lib.sh"
need_mpi
check=$FERRY_BUILD/train/train_mpi_check
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
"${mpirun[@]}" -np 1 "$check" "$work/one.bin"
"${mpirun[@]}" -np 2 "$check" "$work/two.bin"
"$PY" - "$work/one.bin" "$work/two.bin" <<'PY' || fail "2 ranks differ from 1 (see above)"
import sys, numpy as np
one, two = (np.fromfile(p, dtype=np.float32) for p in sys.argv[1:3])
assert one.shape == two.shape and one.size > 0, "parameter counts differ"
diff = float(np.abs(one - two).max())
print(f"2 ranks x B vs 1 rank x 2B: max |difference| {diff:.3g} over {one.size} parameters")
sys.exit(0 if diff < 1e-5 else 1)
PY

# each rank reads its own share of the data
make_shards "$work/data"
"${mpirun[@]}" -np 2 "$FERRY" train --data "$work/data/train_*.bin" --layers 1 --heads 1 \
	--dim 16 --seq-len 32 --batch 2 --steps 3 --warmup 1 --eval-every 0 --ckpt-every 0 \
	--out "$work/run" --verbose >"$work/out" 2>"$work/err"
for s in 1 2 3; do
	r0=$(grep "^rank 0 step $s:" "$work/err" | awk '{print $NF}')
	r1=$(grep "^rank 1 step $s:" "$work/err" | awk '{print $NF}')
	[ -n "$r0" ] && [ -n "$r1" ] || { cat "$work/err" >&2; fail "no batch report"; }
	[ "$r0" != "$r1" ] || fail "ranks read the same batch at step $s"
done
[ "$(grep -c '^step' "$work/out")" = 3 ] || fail "rank 0 did not log 3 steps"
pass "2 ranks match 1, ranks read different data"
