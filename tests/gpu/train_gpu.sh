#!/bin/bash
# tests/gpu/train_gpu.sh: every GPU check of the CUDA trainer on a machine with a GPU: builds
# with CUDA, runs the kernel and model checks (test_kernels_gpu, test_model_gpu), then
# `ferry train --device cuda` end to end (fp32 against the CPU trainer, bit-identical reruns,
# CUDA graph, exact resume) and the d12 / seq 1024 benchmark (tokens/s, MFU, data-wait share),
# and prints one table. Exits 77 without a GPU, 1 when a check fails.
#   usage: tests/gpu/train_gpu.sh [BUILD_DIR]   (default build-gpu; BENCH_STEPS, BENCH_BATCH)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build-gpu}
BENCH_STEPS=${BENCH_STEPS:-40}
BENCH_BATCH=${BENCH_BATCH:-16}
PEAK_FLOPS=${PEAK_FLOPS:-989e12} # H100 SXM dense bf16; 756e12 for H100 PCIe
WORK=$(mktemp -d /tmp/ferry_gpu.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if ! nvidia-smi -L >/dev/null 2>&1; then
	echo "SKIP: no GPU (nvidia-smi -L failed)"
	exit 77
fi
nvidia-smi -L

echo "== build ($BUILD)"
if [ ! -d "$BUILD" ]; then
	meson setup "$BUILD" "$SRC" -Dcuda=enabled --buildtype=release || exit 1
fi
ninja -C "$BUILD" || exit 1
FERRY=$BUILD/mount/ferry

ROWS=()
FAILED=0
row() { # check, value, limit, PASS/FAIL
	ROWS+=("$(printf '| %-44s | %-22s | %-12s | %-4s |' "$1" "$2" "$3" "$4")")
	[ "$4" = PASS ] || FAILED=1
}

echo "== kernels against their CPU twins"
"$BUILD/tests/gpu/test_kernels_gpu" | tee "$WORK/kernels.txt"
st=${PIPESTATUS[0]} # a crash or an early exit prints fewer rows: the status must say 0 too
[ "$st" = 0 ] || row "test_kernels_gpu exit status" "$st" "0" FAIL
while IFS='|' read -r _ what dt err lim res _; do
	row "kernel: $(echo $what) ($(echo $dt))" "$(echo $err)" "$(echo $lim)" "$(echo $res)"
done < <(grep -E '\| (PASS|FAIL) \|' "$WORK/kernels.txt")

echo "== whole model against the CPU trainer"
"$BUILD/tests/gpu/test_model_gpu" | tee "$WORK/model.txt"
st=${PIPESTATUS[0]}
[ "$st" = 0 ] || row "test_model_gpu exit status" "$st" "0" FAIL
while IFS='|' read -r _ what dt err lim res _; do
	row "model: $(echo $what)" "$(echo $err)" "$(echo $lim)" "$(echo $res)"
done < <(grep -E '\| (PASS|FAIL) \|' "$WORK/model.txt")

echo "== ferry train end to end"
. "$SRC/tests/lib/llmc_shards.sh"
make_shards "$WORK/data"
COMMON=(--data "$WORK/data/train_*.bin" --model d2 --seq-len 128 --batch 8 --steps 20
	--warmup 5 --eval-every 0 --ckpt-every 10 --seed 7)
"$FERRY" train "${COMMON[@]}" --out "$WORK/cpu" --threads 8 >/dev/null || exit 1
"$FERRY" train "${COMMON[@]}" --out "$WORK/f32" --device cuda --precision fp32 >/dev/null || exit 1
"$FERRY" train "${COMMON[@]}" --out "$WORK/b1" --device cuda >/dev/null || exit 1
"$FERRY" train "${COMMON[@]}" --out "$WORK/b2" --device cuda >/dev/null || exit 1
"$FERRY" train "${COMMON[@]}" --out "$WORK/bg" --device cuda --cuda-graph >/dev/null || exit 1
"$FERRY" train "${COMMON[@]}" --out "$WORK/br" --device cuda --stop-at 10 >/dev/null || exit 1
"$FERRY" train --resume "$WORK/br" --device cuda >/dev/null || exit 1
losses() { cut -d, -f2 "$1/log.csv" | tail -n +2; }
cmp_rel() { # a b limit: worst relative difference of two loss columns
	/usr/bin/python3 -c '
import sys
a = [float(x) for x in open(sys.argv[1]).read().split()]
b = [float(x) for x in open(sys.argv[2]).read().split()]
assert len(a) == len(b) and a, "different lengths"
print("%.3e" % max(abs(x - y) / abs(y) for x, y in zip(a, b)))' "$1" "$2"
}
losses "$WORK/cpu" >"$WORK/l_cpu"; losses "$WORK/f32" >"$WORK/l_f32"
losses "$WORK/b1" >"$WORK/l_b1"; losses "$WORK/b2" >"$WORK/l_b2"
losses "$WORK/bg" >"$WORK/l_bg"; losses "$WORK/br" >"$WORK/l_br"
e=$(cmp_rel "$WORK/l_f32" "$WORK/l_cpu")
row "train: fp32 GPU vs CPU losses, 20 steps" "$e" "1e-4" \
	"$(/usr/bin/python3 -c "print('PASS' if $e <= 1e-4 else 'FAIL')")"
e=$(cmp_rel "$WORK/l_b1" "$WORK/l_f32")
row "train: bf16 vs fp32 losses, 20 steps" "$e" "2e-2" \
	"$(/usr/bin/python3 -c "print('PASS' if $e <= 2e-2 else 'FAIL')")"
cmp -s "$WORK/l_b1" "$WORK/l_b2" && r=PASS || r=FAIL
row "train: bf16 rerun, same seed: same losses" "bit-identical?" "identical" $r
cmp -s "$WORK/l_b1" "$WORK/l_bg" && r=PASS || r=FAIL
row "train: --cuda-graph: same losses" "bit-identical?" "identical" $r
cmp -s "$WORK/l_b1" "$WORK/l_br" && r=PASS || r=FAIL
row "train: stop at 10 + --resume: same losses" "bit-identical?" "identical" $r
cmp -s "$WORK/b1/model_00000020.bin" "$WORK/br/model_00000020.bin" && r=PASS || r=FAIL
row "train: resumed final checkpoint" "same bytes?" "identical" $r

echo "== d12 / seq 1024 benchmark (bf16, CUDA graph)"
/usr/bin/python3 - "$WORK/gpt2" <<'PY'
import os, sys, numpy as np
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1)
t = rng.integers(0, 50257, size=20_000_000, dtype=np.uint16)
h = np.zeros(256, dtype=np.int32); h[0], h[1], h[2] = 20240520, 1, len(t)
with open(out + "/train_000.bin", "wb") as f:
    f.write(h.tobytes()); f.write(t.tobytes())
PY
"$FERRY" train --data "$WORK/gpt2/train_000.bin" --model d12 --seq-len 1024 \
	--batch "$BENCH_BATCH" --steps "$BENCH_STEPS" --eval-every 0 --ckpt-every 0 \
	--out "$WORK/bench" --device cuda --cuda-graph | tail -3 || exit 1
read -r TOKS WAIT < <(/usr/bin/python3 - "$WORK/bench/log.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))[5:]   # the first steps warm up (graphs, algos)
ms = sum(float(r["ms"]) for r in rows)
tok = sum(float(r["tokens_per_s"]) * float(r["ms"]) / 1e3 for r in rows)
wait = sum(float(r["data_wait_ms"]) for r in rows)
print("%.0f %.4f" % (tok / (ms / 1e3), wait / ms))
PY
)
# FLOPs per token: 6 * parameters + 12 * L * C * T (attention, PaLM's count); d12 with the
# padded vocabulary 50304 has 124,475,904 parameters
MFU=$(/usr/bin/python3 -c "print('%.1f' % (100 * $TOKS * (6 * 124475904 + 12 * 12 * 768 * 1024) / $PEAK_FLOPS))")
row "bench: d12 T=1024 B=$BENCH_BATCH tokens/s" "$TOKS" "-" PASS
r=$(/usr/bin/python3 -c "print('PASS' if $MFU >= 40 else 'FAIL')")
row "bench: MFU % (peak $PEAK_FLOPS)" "$MFU" ">= 40" "$r"
r=$(/usr/bin/python3 -c "print('PASS' if $WAIT < 0.01 else 'FAIL')")
row "bench: data-wait share of step time" "$WAIT" "< 0.01" "$r"

echo
printf '| %-44s | %-22s | %-12s | %-4s |\n' check value limit ok
for r in "${ROWS[@]}"; do echo "$r"; done
exit $FAILED
