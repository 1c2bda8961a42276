#!/usr/bin/env bash
# The gradients reduced in buckets while backward runs (--overlap on) give the same training
# as one all-reduce after backward (--overlap off, the default and simple twin), bit for bit on 2
# MPI ranks: log.csv's losses, lr and norms, and the final weights and optimizer state byte for
# byte, at ZeRO stages 0 and 1, with 3 micro-batches a step (only the last backward reduces).
# The bucketed path is taken: with --bucket-kib 1 every layer makes its own bucket, so each step
# line says 4 buckets for the 3 layers (layer 2 with lnf, layers 1 and 0, wte with wpe), and an
# exposed time no larger than the time the reductions were in flight; the twin says 1 bucket.
# With the default 25 MiB the tiny model makes 2 (its layers, then the embeddings). Stage 2
# keeps its one reduce-scatter: 1 bucket with overlap on.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 3 --heads 1 --dim 17 --seq-len 33 --steps 6
	--batch 4 --total-batch-tokens 792 --warmup 2 --lr 3e-3 --seed 5 --eval-every 0
	--ckpt-every 0 --threads 1 --loader-block-bytes 4096 --loader-window-blocks 3)
cols() { cut -d, -f1-4,8 "$1"; }

run() { # name, options...
	local name=$1
	shift
	"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" "$@" --out "$work/$name" \
		>"$work/$name.out" 2>"$work/$name.err" ||
		fail "$name failed: $(tail -3 "$work/$name.out" "$work/$name.err")"
}

# steps: each step line's "comm E of F ms, N bucket(s)" with N = want, E <= F
steps() { # name, buckets wanted
	"$PY" - "$work/$1.out" "$2" <<'PY' || fail "$1: the step lines do not show the reduction wanted"
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("step ")]
want = int(sys.argv[2])
found = [re.search(r"\| comm ([\d.]+) of ([\d.]+) ms, (\d+) bucket\(s\)", l) for l in lines]
if len(lines) != 6 or not all(found):
    print(f"{sys.argv[1]}: {len(lines)} step lines, {sum(map(bool, found))} with the comm field")
    sys.exit(1)
for f in found:
    e, t, n = float(f.group(1)), float(f.group(2)), int(f.group(3))
    if n != want or e > t + 1e-9:
        print(f"{sys.argv[1]}: {f.group(0)}, want {want} bucket(s) and exposed <= in flight")
        sys.exit(1)
e = sum(float(f.group(1)) for f in found)
t = sum(float(f.group(2)) for f in found)
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {want} bucket(s) a step, exposed {e:.2f} of {t:.2f} ms in 6 steps")
PY
}

same() { # a, b
	diff <(cols "$work/$1/log.csv") <(cols "$work/$2/log.csv") >&2 || fail "$2: log.csv differs from $1's"
	cmp "$work/$1/model_00000006.bin" "$work/$2/model_00000006.bin" || fail "$2: weights differ from $1's"
	# the optimizer state: one file at stage 0, a shard per rank and a manifest above it
	local f n=0
	for f in "$work/$1"/state_00000006.bin "$work/$1"/shard_00000006_*.bin \
		"$work/$1"/manifest_00000006.txt; do
		[ -e "$f" ] || continue
		cmp "$f" "$work/$2/${f##*/}" || fail "$2: ${f##*/} differs from $1's"
		n=$((n + 1))
	done
	[ "$n" -gt 0 ] || fail "$1: no optimizer state at step 6"
}

for z in 0 1; do
	run off$z --zero-stage $z --overlap off
	run on$z --zero-stage $z --overlap on --bucket-kib 1
	steps off$z 1
	steps on$z 4
	same off$z on$z
done
run default0 --overlap on # the default bucket size
steps default0 2
same off0 default0
run on2 --zero-stage 2 --overlap on --bucket-kib 1
steps on2 1

# the ranks must agree: one rank's buckets would wait forever for the other's single collective
rc=0
timeout -k 5 60 "${mpirun[@]}" -np 1 "$FERRY" train "${args[@]}" \
	--out "$work/mixed" : -np 1 "$FERRY" train "${args[@]}" --overlap on --out "$work/mixed" \
	>"$work/mixed.out" 2>"$work/mixed.err" || rc=$?
[ "$rc" != 0 ] && grep -q -- "different --overlap (here: " "$work/mixed.err" ||
	fail "ranks given --overlap on and off were not stopped: $(head -3 "$work/mixed.err")"
pass "overlapped buckets equal one all-reduce bit for bit on 2 ranks (ZeRO 0 and 1)"
