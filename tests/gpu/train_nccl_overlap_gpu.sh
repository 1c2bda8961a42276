#!/bin/bash
# tests/gpu/train_nccl_overlap_gpu.sh: --overlap on for GPU ranks (issue 12). 2 GPU ranks (NCCL)
# train the same d2 run, bf16, 10 steps of 2 micro-batches, with --overlap off and on, at ZeRO 0
# and 1. Tolerance 0: every step's loss in log.csv and the final weights are identical, as on the
# CPU ranks (tests/integ/train_mpi_overlapped_buckets_equal_one_allreduce.sh): on 2 ranks each
# element's sum is a + b whichever collective carries it, and every kernel sums in a fixed order.
# The step lines say "comm E of F ms, N bucket(s)": N = 1 with overlap off, N = 3 with
# --bucket-kib 64 (d2 has 768 KiB of gradients a layer: a bucket per layer, one for the
# embeddings), and E <= F. The E and F of the last step are shown. Exits 77 (SKIP) with fewer
# than 2 GPUs.
#   usage: FERRY_BUILD=DIR tests/gpu/train_nccl_overlap_gpu.sh
# shellcheck source=tests/gpu/train_nccl_lib.sh disable=SC1091
source "$(dirname "$0")/train_nccl_lib.sh"
ARGS=(--data "$WORK/data/train_*.bin" --model d2 --seq-len 128 --batch 4
	--total-batch-tokens 2048 --steps 10 --warmup 2 --lr 1e-3 --seed 7 --eval-every 0
	--ckpt-every 10 --device cuda)

# buckets NAME WANT: every step line of rank 0 says WANT bucket(s) with E <= F
buckets() {
	python3 - "$WORK/$1.out" "$2" <<'PY' || fail "$1: the step lines' comm figures"
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("step")]
want = int(sys.argv[2])
found = [re.search(r"\| comm ([\d.]+) of ([\d.]+) ms, (\d+) bucket\(s\)", l) for l in lines]
if len(lines) != 10 or not all(found):
    print(f"{sys.argv[1]}: {len(lines)} step lines, comm figures in {sum(map(bool, found))}")
    sys.exit(1)
bad = [i + 1 for i, m in enumerate(found)
       if int(m.group(3)) != want or float(m.group(1)) > float(m.group(2))]
m = found[-1]
print(f"{sys.argv[1]}: step 10: comm {m.group(1)} of {m.group(2)} ms, {m.group(3)} bucket(s)")
if bad:
    print(f"steps without {want} bucket(s) or with E > F: {bad}")
sys.exit(1 if bad else 0)
PY
}

for z in 0 1; do
	echo "== ZeRO $z: 2 GPU ranks, --overlap off and on"
	ranks off$z 2 "${ARGS[@]}" --zero-stage $z --overlap off
	ranks on$z 2 "${ARGS[@]}" --zero-stage $z --overlap on --bucket-kib 64
	buckets off$z 1
	buckets on$z 3
	if cmp -s <(cut -d, -f2,4 "$WORK/off$z/log.csv") <(cut -d, -f2,4 "$WORK/on$z/log.csv") &&
		[ "$(tail -n +2 "$WORK/on$z/log.csv" | wc -l)" = 10 ]; then
		echo "ZeRO $z: 10 losses and norms identical with --overlap on and off"
	else
		fail "ZeRO $z: the losses differ (or a run is short): $(paste -d' ' \
			<(cut -d, -f2 "$WORK/off$z/log.csv") <(cut -d, -f2 "$WORK/on$z/log.csv") |
			tr '\n' ';')"
	fi
	cmp "$WORK/off$z/model_00000010.bin" "$WORK/on$z/model_00000010.bin" ||
		fail "ZeRO $z: the final weights differ between --overlap off and on"
done

echo "== --overlap on with --cuda-graph falls back to the single all-reduce"
ranks graph 2 "${ARGS[@]}" --overlap on --bucket-kib 64 --cuda-graph
buckets graph 1

[ "$FAILED" = 0 ] && echo "PASS: --overlap on for GPU ranks equals off" || exit 1
