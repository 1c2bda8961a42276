#!/bin/bash
# tests/gpu/train_gpu.sh: every GPU check of the CUDA trainer, written for a GPU machine we may
# see once: it reports whatever happens. The environment comes first (GPU, driver and runtime,
# libraries the binaries miss), then each step runs under `timeout` with its outcome recorded
# (a failure does not stop the rest), and the table is printed on exit, also when killed.
# Steps: the kernel and model checks, the attention micro-benchmark, `ferry train --device
# cuda` end to end (fp32 against the CPU trainer, bit-identical reruns, CUDA graph, exact
# resume), and d12 / seq 1024 at B=16 and 32 with and without --cuda-graph (tokens/s, MFU,
# data-wait share) plus one FERRY_TRAIN_PROFILE run. MFU and the data-wait share are measured
# against the issue's goals and reported, but do not fail the run.
# Exits 0 when every check passed, 1 when one failed or did not run, 77 (SKIP) without a GPU.
#   usage: [FERRY_BUILD=DIR] tests/gpu/train_gpu.sh
# FERRY_BUILD: a built tree (-Dcuda=enabled), used as it is: nothing is rebuilt (a tree carried
# to another machine has new timestamps and would rebuild everything). Without it, build-gpu/
# is configured and built here. BENCH_STEPS (30), BUDGET_S (470: a step is cut to what is left,
# and none starts in the last 10 s), PEAK_FLOPS (instead of the peak known for the GPU's name).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_STEPS=${BENCH_STEPS:-30}
BUDGET_S=${BUDGET_S:-470}
WORK=$(mktemp -d /tmp/ferry_gpu.XXXXXX)
ROWS=()
FAILED=0
GPU=unknown # yes, no (SKIP), broken (the runtime cannot use the driver)
GPU_NAME=""

# row CHECK VALUE LIMIT RESULT: PASS, FAIL, INFO (measured, no limit), MISS (a goal not met: not
# a failure), SKIP (no GPU), NOT RUN (out of time: a failure)
row() {
	ROWS+=("$(printf '| %-46s | %-30s | %-10s | %-7s |' "$1" "$2" "$3" "$4")")
	case $4 in FAIL | "NOT RUN") FAILED=1 ;; esac
}

finish() {
	echo
	echo "== table ($(date -u '+%F %T') UTC, ${SECONDS}s, GPU: ${GPU_NAME:-$GPU})"
	printf '| %-46s | %-30s | %-10s | %-7s |\n' check value limit result
	for r in "${ROWS[@]}"; do echo "$r"; done
	rm -rf "$WORK"
	if [ "$FAILED" = 1 ]; then
		exit 1
	elif [ "$GPU" != yes ]; then
		echo "SKIP: no GPU"
		exit 77
	fi
	exit 0
}
trap finish EXIT
trap 'row "train_gpu.sh" "killed by a signal" "-" FAIL; exit 1' INT TERM HUP

# run_step NAME SECONDS CMD...: CMD under timeout, cut to what is left of BUDGET_S, its output
# shown and kept in $WORK/NAME.log; returns CMD's status (124: timed out; 125: not started,
# out of time). A timeout or a time-out-of-budget gets its own FAIL / NOT RUN row.
run_step() {
	local name=$1 limit=$2 left st
	shift 2
	left=$((BUDGET_S - SECONDS))
	if [ "$left" -lt 10 ]; then
		row "$name" "not started: ${BUDGET_S}s budget spent" "-" "NOT RUN"
		return 125
	fi
	[ "$limit" -le "$left" ] || limit=$left
	echo "== $name (timeout ${limit}s)"
	timeout -k 5 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
	st=${PIPESTATUS[0]}
	case $st in 124 | 137) row "$name" "timed out after ${limit}s" "-" FAIL ;; esac
	return "$st"
}

# status_row CHECK STATUS: a PASS/FAIL row for a command's exit status (timeouts have theirs).
status_row() {
	case $2 in
	0) row "$1" "exit 0" "0" PASS ;;
	124 | 125 | 137) ;;
	*) row "$1" "exit $2" "0" FAIL ;;
	esac
}

# The dense bf16 tensor-core peak (FLOP/s) for a GPU's name, empty when not known.
peak_flops() {
	case $1 in
	*H200*NVL* | *H100*NVL*) echo 835e12 ;;
	*H200* | *H100*SXM* | *"H100 80GB HBM3"*) echo 989e12 ;;
	*H100*PCIe*) echo 756e12 ;;
	*A100*) echo 312e12 ;;
	esac
}

echo "== environment"
date -u
uname -srm
echo "cores: $(nproc), memory:" \
	"$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "device nodes: $(compgen -G "/dev/nvidia*" | tr "\n" " ")"
if command -v nvidia-smi >/dev/null; then
	timeout 30 nvidia-smi
	timeout 30 nvidia-smi --format=csv \
		--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit
else
	echo "nvidia-smi: not found"
fi
command -v nvcc >/dev/null && nvcc --version | tail -2
ldconfig -p 2>/dev/null | grep -E 'lib(cuda|cudart|cublasLt|cudnn|nccl)\.so' | sed 's/^\t*//'

# Without a driver nor a device node and no tree to ask, there is nothing to build for.
if [ -z "${FERRY_BUILD:-}" ] && ! nvidia-smi -L >/dev/null 2>&1 && ! ls /dev/nvidia* \
	>/dev/null 2>&1; then
	GPU=no
else
	if [ -n "${FERRY_BUILD:-}" ]; then
		BUILD=$(cd "$FERRY_BUILD" && pwd) || BUILD=$FERRY_BUILD
		echo "== build: using $BUILD as it is"
	else
		BUILD=$SRC/build-gpu
		[ -d "$BUILD" ] || run_step "build: meson setup" 120 meson setup "$BUILD" "$SRC" \
			-Dcuda=enabled --buildtype=release
		run_step "build: ninja" 400 ninja -C "$BUILD"
		status_row "build: ninja" $?
	fi
	FERRY=$BUILD/mount/ferry
	echo "== libraries the binaries need"
	# ferry hands --device cuda runs to ferry-cuda beside it (the GPU trainer lives there)
	for b in "$FERRY" "$BUILD"/mount/ferry-cuda "$BUILD"/loader/loader-gpu-check \
		"$BUILD"/tests/gpu/{test_kernels_gpu,test_model_gpu,test_pp_stage_gpu,gpu_info,bench_attention}; do
		if [ ! -x "$b" ]; then
			row "binary: ${b#"$BUILD"/}" "missing" "built" FAIL
			continue
		fi
		missing=$(ldd "$b" 2>&1 | awk '/not found/ { printf "%s%s", sep, $1; sep = " " }')
		[ -z "$missing" ] || row "libraries: ${b#"$BUILD"/}" "missing: $missing" "-" FAIL
	done
	ldd "$BUILD"/mount/ferry-cuda 2>&1 | grep -E 'cuda|cublas|nccl|mpi|not found'
	run_step "gpu_info" 60 "$BUILD/tests/gpu/gpu_info"
	case $? in
	0) GPU=yes ;;
	77) GPU=no ;;
	*)
		GPU=broken
		err=$(sed -n 's/^error: cudaGetDeviceCount: \([^:]*\).*/\1/p' "$WORK/gpu_info.log")
		row "CUDA runtime finds the GPU" "${err:-gpu_info exit status}" "a device" FAIL
		;;
	esac
	GPU_NAME=$(sed -n 's/^device 0: //p' "$WORK/gpu_info.log" 2>/dev/null)
fi

GPU_STEPS=("loader staging onto the GPU" "kernels against their CPU twins"
	"whole model against the CPU trainer" "NCCL path on one GPU"
	"attention micro-benchmark" "ferry train end to end" "d12 T=1024 benchmark"
	"FERRY_TRAIN_PROFILE per layer kind")
if [ "$GPU" != yes ]; then
	r=SKIP
	[ "$GPU" = no ] || r="NOT RUN"
	for s in "${GPU_STEPS[@]}"; do row "$s" "not run: no usable GPU" "-" "$r"; done
	exit
fi

# kernel_rows PREFIX LOG: the PASS/FAIL rows a test program printed ("| what | type | error |
# limit | result |"), their cells trimmed
kernel_rows() {
	while IFS='|' read -r _ what dt err lim res _; do
		row "$1 $what ($dt)" "$err" "$lim" "$res"
	done < <(grep -E '\| (PASS|FAIL) \|' "$2" | sed 's/  */ /g; s/| /|/g; s/ |/|/g')
}

# the loader's staging: batches on the GPU equal the host's, and its GB/s against a plain copy
run_step loader 120 "$BUILD/loader/loader-gpu-check"
status_row "loader: loader-gpu-check" $?
gbs=$(sed -n 's/^  staging path.* \([0-9.]*\) GB\/s$/\1/p' "$WORK/loader.log")
ratio=$(sed -n 's/^  ratio \([0-9.]*\) .*/\1/p' "$WORK/loader.log")
if [ -n "$ratio" ]; then
	row "loader: staging GB/s (host to device)" "$gbs" "-" INFO
	row "loader: staging / plain cudaMemcpyAsync" "$ratio" ">= 0.9" \
		"$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "PASS" : "MISS") }')"
fi

run_step kernels 180 "$BUILD/tests/gpu/test_kernels_gpu"
status_row "kernels: test_kernels_gpu" $? # a crash prints fewer rows: the status says it
kernel_rows kernel: "$WORK/kernels.log"

run_step model 240 "$BUILD/tests/gpu/test_model_gpu"
status_row "model: test_model_gpu" $?
kernel_rows model: "$WORK/model.log"

# a pipeline stage (two stages of one model in one process, no NCCL) against the whole model
run_step pp_stage 120 "$BUILD/tests/gpu/test_pp_stage_gpu"
status_row "pipeline stage: test_pp_stage_gpu" $?
kernel_rows pp_stage: "$WORK/pp_stage.log"

# the NCCL path on one GPU against none (built where NCCL is, which ferry-cuda then links)
if ldd "$BUILD/mount/ferry-cuda" 2>/dev/null | grep -q libnccl; then
	run_step comm_nccl 120 "$BUILD/tests/gpu/test_comm_nccl_gpu"
	status_row "comm: test_comm_nccl_gpu" $?
	kernel_rows comm: "$WORK/comm_nccl.log"
else
	row "NCCL path on one GPU" "not built: no NCCL" "-" SKIP
fi

run_step attention 60 "$BUILD/tests/gpu/bench_attention"
status_row "attention: bench_attention" $?
while IFS=: read -r what val; do
	row "$what" "$val" "-" INFO
done < <(grep '^attention ' "$WORK/attention.log")

# The data, written without numpy: byte-level llm.c shards (magic 20240520, version 1, uint16
# tokens, header[3] = 256) of the trainer's sources, train_000/001 and val_000, and random
# tokens of the GPT-2 vocabulary for the benchmark, gpt2/train_000.bin.
run_step shards 60 python3 - "$WORK/data" "$SRC" <<'PY'
import glob, os, random, sys
from array import array
out, src = sys.argv[1], sys.argv[2]
def write(path, toks, vocab):
    h = array("i", [20240520, 1, len(toks), vocab] + [0] * 252)
    with open(path, "wb") as f:
        h.tofile(f); toks.tofile(f)
corpus = b"".join(open(p, "rb").read() for p in sorted(glob.glob(src + "/train/*.[ch]")))
toks = array("H", iter(corpus))  # one token per byte (bytes alone would be read as uint16s)
cut = len(toks) * 9 // 10
os.makedirs(out + "/gpt2", exist_ok=True)
write(out + "/train_000.bin", toks[:cut // 2], 256)
write(out + "/train_001.bin", toks[cut // 2:cut], 256)
write(out + "/val_000.bin", toks[cut:], 256)
rng = random.Random(1)
write(out + "/gpt2/train_000.bin", array("H", (rng.randrange(50257) for _ in range(3 << 20))),
      50257)
PY
status_row "data: shards (python3, no numpy)" $?

# losses DIR: the loss column of a run's log.csv
losses() { cut -d, -f2 "$1/log.csv" 2>/dev/null | tail -n +2; }
# cmp_rel NAME A B LIMIT: a row with the worst relative difference of two runs' losses
cmp_rel() {
	local e
	e=$(paste <(losses "$2") <(losses "$3") | awk '
		NF != 2 || $2 == 0 { bad = 1 }
		{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > m) m = d }
		END { if (bad || NR == 0) print "n/a"; else printf "%.3e\n", m }')
	if [ "$e" = n/a ]; then
		row "$1" "no losses to compare" "$4" FAIL
	else
		row "$1" "$e" "$4" \
			"$(awk -v e="$e" -v l="$4" 'BEGIN { print (e <= l ? "PASS" : "FAIL") }')"
	fi
}
# same NAME FILE_A FILE_B: a row for two files being identical
same() {
	if [ -s "$2" ] && cmp -s "$2" "$3"; then
		row "$1" "identical" "identical" PASS
	else
		row "$1" "different or missing" "identical" FAIL
	fi
}
train() { # NAME ARGS...: one ferry train run under run_step, its status as a row
	local name=$1
	shift
	run_step "$name" 120 "$FERRY" train "$@"
	status_row "train: $name runs" $?
}
COMMON=(--data "$WORK/data/train_*.bin" --model d2 --seq-len 128 --batch 8 --steps 20
	--warmup 5 --eval-every 0 --ckpt-every 10 --seed 7)
train cpu "${COMMON[@]}" --out "$WORK/cpu" --threads "$(nproc)"
train fp32 "${COMMON[@]}" --out "$WORK/f32" --device cuda --precision fp32
train bf16 "${COMMON[@]}" --out "$WORK/b1" --device cuda
train bf16-rerun "${COMMON[@]}" --out "$WORK/b2" --device cuda
run_step bf16-cores 120 env FERRY_CUDA_ATTENTION=cores "$FERRY" train "${COMMON[@]}" \
	--out "$WORK/bc" --device cuda
status_row "train: bf16-cores runs" $?
train bf16-graph "${COMMON[@]}" --out "$WORK/bg" --device cuda --cuda-graph
train bf16-stop "${COMMON[@]}" --out "$WORK/br" --device cuda --stop-at 10
train bf16-resume --resume "$WORK/br" --device cuda
cmp_rel "train: fp32 GPU vs CPU losses, 20 steps" "$WORK/f32" "$WORK/cpu" 1e-4
cmp_rel "train: bf16 vs fp32 losses, 20 steps" "$WORK/b1" "$WORK/f32" 2e-2
cmp_rel "train: bf16 tensor-core vs CUDA-core attention" "$WORK/b1" "$WORK/bc" 2e-2
for r in b1 b2 bg br; do losses "$WORK/$r" >"$WORK/losses_$r"; done
same "train: bf16 rerun, same seed: same losses" "$WORK/losses_b1" "$WORK/losses_b2"
same "train: --cuda-graph: same losses" "$WORK/losses_b1" "$WORK/losses_bg"
same "train: stop at 10 + --resume: same losses" "$WORK/losses_b1" "$WORK/losses_br"
same "train: resumed final checkpoint" "$WORK/b1/model_00000020.bin" \
	"$WORK/br/model_00000020.bin"

# d12 with the padded vocabulary 50304 has 124,475,904 parameters; FLOPs per token:
# 6 * parameters + 12 * L * C * T (attention, PaLM's count, the causal half not subtracted)
FLOPS_PER_TOKEN=$((6 * 124475904 + 12 * 12 * 768 * 1024))
PEAK=${PEAK_FLOPS:-$(peak_flops "$GPU_NAME")}
# bench B GRAPH(0/1): one d12 / T=1024 run; tokens/s, MFU and data wait over the steps after the
# first 5 (graph capture, algorithm choice and module loads happen there)
bench() {
	local name="d12 T=1024 B=$1" out=$WORK/bench_$1_$2 st
	[ "$2" = 0 ] || name+=" graph"
	local args=(--data "$WORK/data/gpt2/train_000.bin" --model d12 --seq-len 1024 --batch "$1"
		--steps "$BENCH_STEPS" --warmup 5 --eval-every 0 --ckpt-every 0 --out "$out"
		--device cuda)
	[ "$2" = 0 ] || args+=(--cuda-graph)
	run_step "bench_$1_$2" 150 "$FERRY" train "${args[@]}"
	st=$?
	status_row "bench: $name runs" $st
	[ "$st" = 0 ] || return
	read -r toks wait < <(awk -F, 'NR > 6 { ms += $5; tok += $6 * $5; w += $7 }
		END { if (ms > 0) printf "%.0f %.4f\n", tok / ms, w / ms; else print "0 0" }' \
		"$out/log.csv")
	row "bench: $name tokens/s" "$toks" "-" INFO
	if [ -n "$PEAK" ]; then
		mfu=$(awk -v t="$toks" -v f="$FLOPS_PER_TOKEN" -v p="$PEAK" \
			'BEGIN { printf "%.1f", 100 * t * f / p }')
		row "bench: $name MFU % (peak $PEAK)" "$mfu" ">= 40" \
			"$(awk -v m="$mfu" 'BEGIN { print (m >= 40 ? "PASS" : "MISS") }')"
	else
		row "bench: $name MFU %" "peak unknown for '${GPU_NAME:-?}'" "PEAK_FLOPS" INFO
	fi
	row "bench: $name data-wait share" "$wait" "< 0.01" \
		"$(awk -v w="$wait" 'BEGIN { print (w < 0.01 ? "PASS" : "MISS") }')"
}
for b in 16 32; do
	for gr in 1 0; do bench "$b" "$gr"; done
done

# the profile run: per layer kind, timed with CUDA events around each kernel group
run_step profile 120 env FERRY_TRAIN_PROFILE=1 "$FERRY" train --data \
	"$WORK/data/gpt2/train_000.bin" --model d12 --seq-len 1024 --batch 16 --steps 10 \
	--eval-every 0 --ckpt-every 0 --out "$WORK/profile" --device cuda
st=$?
status_row "profile: FERRY_TRAIN_PROFILE=1 d12 B=16 runs" $st
while IFS='|' read -r kind ms pct; do
	row "profile: $kind" "$ms ms/step, $pct" "-" INFO
done < <(awk '$1 ~ /^(fwd|bwd)$/ && $(NF - 1) == "ms/step" {
	k = $1; for (i = 2; i <= NF - 3; i++) k = k " " $i; print k "|" $(NF - 2) "|" $NF }' \
	"$WORK/profile.log")
