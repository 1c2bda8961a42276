#!/usr/bin/env bash
# Tensor parallelism on CPU ranks (issue 13): --tensor-parallel 2 on 2 MPI ranks against 1 rank
# with the same global batch. Prints, per step and rank, the payload of the tensor group's
# collectives as the comm layer counted it (comm.h nr_bytes: each all-reduce's buffer once)
# beside the formula, the bytes a ring all-reduce sends per rank for that payload, and the mean
# step time after step 1 of both runs with their ratio.
#   formula (payload per step and rank): L blocks x 4 all-reduces (forward: attproj's and
#   fcproj's outputs; backward: the input gradients of qkv and fc) x B*T*C floats x 4 bytes x
#   micro-batches a step, + 4 bytes (the gradient norm's one float)
#   sent per rank by a ring all-reduce of k ranks: 2 (k - 1) / k x payload (k = 2: the payload)
# Two ranks take both cores: on a shared machine compare only within one run, beside the load
# average printed with it.
#   usage: bench_tp.sh [STEPS (default 6)] [LAYERS HEADS DIM (default 4 4 256)] [SEQ (64)] [B (4)]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$src/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
PY=/usr/bin/python3
[ -x "$FERRY" ] || { echo "FAIL: no ferry binary at $FERRY" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun" >&2; exit 77; }
steps=${1:-6} L=${2:-4} NH=${3:-4} C=${4:-256} seq=${5:-64} B=${6:-4}
work=$(mktemp -d /tmp/ferry_bench_tp.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$src/tests/lib/llmc_shards.sh"
make_shards "$work/data"

run() { # name, ranks, options...
	local name=$1 np=$2
	shift 2
	mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np "$np" \
		"$FERRY" train --data "$work/data/train_*.bin" --layers "$L" --heads "$NH" --dim "$C" \
		--seq-len "$seq" --batch "$B" --steps "$steps" --warmup 1 --eval-every 0 \
		--ckpt-every 0 --threads 1 --out "$work/$name" "$@" >"$work/$name.out" \
		2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run one 1
run tp2 2 --tensor-parallel 2
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$work" "$L" "$C" "$seq" "$B" <<'PY'
import re, sys
work, L, C, T, B = sys.argv[1], *map(int, sys.argv[2:])
def steps(name):
    out = open(f"{work}/{name}.out").read()
    rows = re.findall(r"^step +(\d+)/\d+ .*?\| ([\d.]+) ms \|.*?(?:tensor comm (\d+) bytes)?$",
                      out, re.M)
    return [(int(n), float(ms), int(b) if b else 0) for n, ms, b in rows]
one, tp = steps("one"), steps("tp2")
accum = int(re.search(r"(\d+) micro-step", open(f"{work}/tp2.out").read()).group(1))
formula = L * 4 * B * T * C * 4 * accum + 4
counted = sorted({b for _, _, b in tp})
k = 2
print(f"tensor 2, L={L} C={C} B={B} T={T}, {accum} micro-step(s) a step")
print(f"  payload per step per rank: counted {', '.join(map(str, counted))} bytes, formula "
      f"{formula} bytes (L x 4 x B*T*C x 4 B x micro-steps + 4); counted/formula "
      f"{counted[-1] / formula:.4f}")
print(f"  a ring all-reduce sends 2(k-1)/k of it per rank: {formula * 2 * (k - 1) / k:.0f} bytes "
      f"a step ({formula * 2 * (k - 1) / k / 2**20:.2f} MiB)")
def mean_ms(rows):
    ms = [m for n, m, _ in rows if n > 1]
    return sum(ms) / len(ms)
m1, m2 = mean_ms(one), mean_ms(tp)
print(f"  step time after step 1: 1 rank {m1:.1f} ms, tensor 2 {m2:.1f} ms: "
      f"speedup {m1 / m2:.2f} (ideal 2 on 2 cores)")
if counted != [formula]:
    sys.exit("FAIL: the counted payload is not the formula's")
PY
