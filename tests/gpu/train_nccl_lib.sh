# shellcheck shell=bash
# tests/gpu/train_nccl_lib.sh: what the NCCL rank scripts share (sourced): the build, the GPU
# count (fewer than 2: SKIP, exit 77), a work directory, the llm.c shards of the trainer's own
# sources, and GPU ranks started with torchrun's variables set by hand (NCCL over the TCP
# rendezvous, as train_zero_gpu.sh starts them).
#   usage: FERRY_BUILD=DIR tests/gpu/SCRIPT.sh   (DIR: a tree built with -Dcuda=enabled)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${FERRY_BUILD:-$SRC/build-cuda}
FERRY=$BUILD/mount/ferry
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
if [ "${NGPU:-0}" -lt 2 ]; then
	echo "SKIP: $(basename "$0") needs 2 GPUs; this machine has ${NGPU:-0} (untested here)"
	exit 77
fi
if [ ! -x "$FERRY" ] || [ ! -x "$BUILD/mount/ferry-cuda" ]; then
	echo "FAIL: no $FERRY and ferry-cuda beside it (build with -Dcuda=enabled, set FERRY_BUILD)"
	exit 1
fi
WORK=$(mktemp -d /tmp/ferry_nccl_gpu.XXXXXX)
PIDS=()
# every rank this script started is ended, whatever happens
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
FAILED=0 # read by the scripts that source this
# shellcheck disable=SC2034
fail() {
	echo "FAIL: $*"
	FAILED=1
}

# byte-level llm.c shards of the trainer's sources (as train_gpu.sh writes them)
python3 - "$WORK/data" "$SRC" <<'PY' || exit 1
import glob, os, sys
from array import array
out, src = sys.argv[1], sys.argv[2]
def write(path, toks):
    h = array("i", [20240520, 1, len(toks), 256] + [0] * 252)
    with open(path, "wb") as f:
        h.tofile(f); toks.tofile(f)
corpus = b"".join(open(p, "rb").read() for p in sorted(glob.glob(src + "/train/*.[ch]")))
toks = array("H", iter(corpus))
os.makedirs(out, exist_ok=True)
write(out + "/train_000.bin", toks[: len(toks) // 2])
write(out + "/train_001.bin", toks[len(toks) // 2 :])
PY

# start_ranks NAME N ARGS...: N GPU ranks of one run into $WORK/NAME, in the background, each
# rank's output in $WORK/NAME.RANK.out; their pids in RANK_PIDS (the ferry process itself:
# it becomes ferry-cuda by exec, so a signal to the pid reaches the rank)
start_ranks() {
	local name=$1 n=$2 r port=$((29600 + RANDOM % 1000))
	shift 2
	RANK_PIDS=()
	for ((r = 0; r < n; r++)); do
		RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 \
			MASTER_PORT=$port "$FERRY" train "$@" --out "$WORK/$name" \
			>"$WORK/$name.$r.out" 2>&1 &
		RANK_PIDS+=($!)
		PIDS+=($!)
	done
}

# ranks NAME N ARGS...: start_ranks, then waits for all of them (300 s at most); rank 0's
# output copied to $WORK/NAME.out
ranks() {
	local name=$1 n=$2 st=0 p i
	start_ranks "$@"
	for ((i = 0; i < 3000; i++)); do
		st=0
		for p in "${RANK_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && st=1; done
		[ $st = 1 ] || break
		sleep 0.1
	done
	[ $st = 0 ] || fail "$name: ranks still running after 300 s"
	for p in "${RANK_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" || st=1
	done
	cp "$WORK/$name.0.out" "$WORK/$name.out"
	[ $st = 0 ] || fail "$name: a rank failed: $(tail -n 3 "$WORK/$name".*.out)"
}
