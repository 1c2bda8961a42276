#!/usr/bin/env bash
# CPU training throughput of `ferry train` for d6 (6 layers, 6 heads, 384 channels) at
# seq 256, batch 8, against the matmul-bound limit of this machine measured in the same run:
# a plain OpenMP sgemm over the same shapes, compiled here with -O3 -march=native -fopenmp (so it
# may use every vector unit and FMA of this CPU), gives GFLOP/s, and the trainer's GFLOP/s
# (6 x parameters x tokens + causal attention) is reported as a ratio of it.
#   usage: bench_train.sh [STEPS (default 4)] [THREADS (default nproc)]
# FERRY_BIN_BASE=/path/to/an/older/ferry runs that build too, in the same run, for a before/after
# table; FERRY_TRAIN_PROFILE=1 adds the per-layer times of each run (see docs/train.md).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$src/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
[ -x "$FERRY" ] || { echo "FAIL: no ferry binary at $FERRY" >&2; exit 1; }
steps=${1:-4}
threads=${2:-$(nproc)}
work=$(mktemp -d /tmp/ferry_bench_train.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$src/tests/lib/llmc_shards.sh"
make_shards "$work/data"

L=6 C=384 T=256 B=8 V=256
run_train() { # binary out-dir
	"$1" train --data "$work/data/train_*.bin" --model d6 --seq-len $T --batch $B \
		--steps "$steps" --warmup 1 --eval-every 0 --ckpt-every 0 --threads "$threads" \
		--out "$2" >"$2.out" 2>"$2.err" || { cat "$2.err" >&2; exit 1; }
	[ -z "${FERRY_TRAIN_PROFILE:-}" ] || sed "s|^|$(basename "$2"): |" "$2.err"
}
runs=("$work/run")
if [ -n "${FERRY_BIN_BASE:-}" ]; then
	run_train "$FERRY_BIN_BASE" "$work/base"
	runs=("$work/base" "$work/run")
fi
run_train "$FERRY" "$work/run"

cat >"$work/sgemm.c" <<'C'
/* out (N,OC) = inp (N,C) @ w (OC,C)^T, the trainer's shapes, as a plain sgemm: rows split over
 * threads, the weight pre-transposed so the inner loop is a unit-stride axpy. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
static void sgemm(float *out, const float *inp, const float *wt, int N, int C, int OC)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		float *o = out + (size_t)n * OC;
		for (int j = 0; j < OC; j++)
			o[j] = 0;
		for (int i = 0; i < C; i++) {
			float a = inp[(size_t)n * C + i];
			const float *w = wt + (size_t)i * OC;
			for (int j = 0; j < OC; j++)
				o[j] += a * w[j];
		}
	}
}
int main(int argc, char **argv)
{
	int N = atoi(argv[1]), C = atoi(argv[2]), L = atoi(argv[3]), V = atoi(argv[4]);
	int shapes[5][2] = { { C, 3 * C }, { C, C }, { C, 4 * C }, { 4 * C, C }, { C, V } };
	size_t big = (size_t)N * 4 * C;
	float *a = malloc(big * 4), *w = malloc((size_t)16 * C * C * 4 + (size_t)V * C * 4),
	      *o = malloc(big * 4 > (size_t)N * V * 4 ? big * 4 : (size_t)N * V * 4);
	for (size_t i = 0; i < big; i++)
		a[i] = (float)(i % 7) * 0.1f;
	for (size_t i = 0; i < (size_t)16 * C * C; i++)
		w[i] = (float)(i % 5) * 0.1f;
	double flops = 0, t0 = omp_get_wtime();
	for (int rep = 0; rep < 2; rep++) /* one forward pass worth of matmuls, twice */
		for (int s = 0; s < 5; s++)
			for (int l = 0; l < (s == 4 ? 1 : L); l++) {
				sgemm(o, a, w, N, shapes[s][0], shapes[s][1]);
				flops += 2.0 * N * shapes[s][0] * shapes[s][1];
			}
	printf("%.3f\n", flops / (omp_get_wtime() - t0) / 1e9);
	return 0;
}
C
cc -O3 -march=native -fopenmp -o "$work/sgemm" "$work/sgemm.c"
sgemm_gflops=$(OMP_NUM_THREADS=$threads "$work/sgemm" $((B * T)) $C $L $V)

/usr/bin/python3 - "$sgemm_gflops" $L $C $T $V "$threads" "${runs[@]}" <<'PY'
import csv, os, statistics, sys
sgemm, (L, C, T, V, threads), runs = float(sys.argv[1]), map(int, sys.argv[2:7]), sys.argv[7:]
params = L * 12 * C * C + V * C        # matmul weights, lm head tied to wte
flops_per_token = 6 * params + 6 * L * T * C  # forward + backward; causal attention
print(f"d6 seq {T} batch 8, {threads} thread(s); plain sgemm of the same shapes: "
      f"{sgemm:.2f} GFLOP/s")
print(f"{'build':6} {'ms/step':>9} {'tokens/s':>9} {'GFLOP/s':>8} {'/ sgemm':>8}")
for run in runs:
    rows = list(csv.DictReader(open(run + "/log.csv")))
    ms = statistics.median(float(r["ms"]) for r in rows[1:] or rows)  # step 1 warms up
    tps = statistics.median(float(r["tokens_per_s"]) for r in rows[1:] or rows)
    gflops = tps * flops_per_token / 1e9
    print(f"{os.path.basename(run):6} {ms:9.1f} {tps:9.0f} {gflops:8.2f} {gflops / sgemm:8.2f}")
PY
