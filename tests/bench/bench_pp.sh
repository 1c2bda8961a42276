#!/usr/bin/env bash
# Pipeline parallel on CPU ranks: a pipeline of 2 stages on 2 MPI ranks (1 thread each) with 4
# and 8 micro-batches a step, against 1 rank accumulating the same micro-batches (the same
# global batch) with 1 thread and with 2 (the same cores as the pipeline). Per run: the fastest
# and the median step time (step 1 left out: warm-up; the fastest is the one least disturbed by
# whatever else runs on the machine, and the speed-ups are of it) and, for the pipeline, the bubble measured by ferry train
# (idle/total: the time each stage waits in its sends and receives, averaged over stages and
# steps) beside the theoretical (P-1)/(M+P-1); then the speed-up over 1 rank of 1 thread
# against the ideal M*P/(M+P-1) of a pipeline whose stages cost the same and whose sends are
# free.
#   usage: bench_pp.sh [STEPS (default 8)] [LAYERS (default 4)] [DIM (default 128)]
# The stages are not equal (the last runs the head: the output projection and the loss), and on
# a shared 2-core machine the ranks compete with whatever else runs: compare only within one
# run, beside the load average printed with it.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$src/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
[ -x "$FERRY" ] || { echo "FAIL: no ferry binary at $FERRY" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun" >&2; exit 77; }
steps=${1:-8}
layers=${2:-4}
dim=${3:-128}
work=$(mktemp -d /tmp/ferry_bench_pp.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$src/tests/lib/llmc_shards.sh"
make_shards "$work/data"
B=2
T=64

run() { # name, ranks, threads, micro-batches, options...
	local name=$1 np=$2 threads=$3 micro=$4
	shift 4
	mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS="$threads" -np "$np" \
		"$FERRY" train --data "$work/data/train_*.bin" --layers "$layers" --heads 4 \
		--dim "$dim" --seq-len $T --batch $B --total-batch-tokens $((micro * B * T)) \
		--steps "$steps" --warmup 1 --eval-every 0 --ckpt-every 0 --threads "$threads" \
		--out "$work/$name" "$@" >"$work/$name.out" 2>"$work/$name.err" ||
		{ cat "$work/$name.err" >&2; exit 1; }
}
echo "bench_pp: $layers layers, $dim channels, B $B T $T, $steps steps; $(nproc) cores"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in 4 8; do
	run one1_$m 1 1 $m
	run one2_$m 1 2 $m
	run pp_$m 2 1 $m --pipeline-parallel 2
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
def step_ms(name):
    t = sorted(float(m.group(2)) for l in open(f"{work}/{name}.out")
               for m in [re.search(r"^step +(\d+)/\d+ .*\| ([\d.]+) ms \|", l)] if m and int(m.group(1)) > 1)
    if not t:
        sys.exit(f"{name}: no step lines after step 1")
    return t[0], t[len(t) // 2]
P = 2
for M in (4, 8):
    (one1, one1m), (one2, one2m), (pp, ppm) = step_ms(f"one1_{M}"), step_ms(f"one2_{M}"), step_ms(f"pp_{M}")
    line = open(f"{work}/pp_{M}.out").read()
    b = re.search(r"bubble ([\d.]+) measured .* ([\d.]+) theoretical", line)
    print(f"M={M}: step ms fastest (median): 1 rank x 1 thread {one1:.1f} ({one1m:.1f}) | "
          f"1 rank x 2 threads {one2:.1f} ({one2m:.1f}) | pipeline 2 x 1 thread {pp:.1f} ({ppm:.1f})")
    print(f"      bubble {b.group(1)} measured, {b.group(2)} theoretical; speed-up over 1 thread "
          f"{one1 / pp:.2f} (ideal {M * P / (M + P - 1):.2f}), over 2 threads {one2 / pp:.2f}")
PY
