#!/usr/bin/env bash
# ZeRO on CPU ranks at d12 shapes (12 layers, 12 heads, 768 channels, 124M parameters): 2 MPI
# ranks train at --zero-stage 0, 1 and 2, and 1 rank trains the same global batch; for each
# run the bytes per rank ferry computes (its "memory per rank" line: parameters, gradients,
# optimizer state), each rank's measured peak RSS, and the mean step time after step 1, then
# the ratios against stage 0 and against the 1-rank run. The 2-rank runs take the two cores; on
# a shared machine compare only within one run, beside the load average printed with it.
#   usage: bench_zero.sh [STEPS (default 3)] [MODEL (default d12)]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$src/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
PY=/usr/bin/python3
[ -x "$FERRY" ] || { echo "FAIL: no ferry binary at $FERRY" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun" >&2; exit 77; }
steps=${1:-3}
model=${2:-d12}
work=$(mktemp -d /tmp/ferry_bench_zero.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$src/tests/lib/llmc_shards.sh"
make_shards "$work/data"

# each rank's peak RSS (its children's ru_maxrss, KiB) into NAME.rss.RANK
cat >"$work/rss.py" <<'PY'
import os, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(f"{sys.argv[1]}.rss.{rank}", "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
PY
run() { # name, ranks, batch, options...
	local name=$1 np=$2 batch=$3
	shift 3
	mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np "$np" \
		"$PY" "$work/rss.py" "$work/$name" \
		"$FERRY" train --data "$work/data/train_*.bin" --model "$model" --seq-len 64 \
		--batch "$batch" --steps "$steps" --warmup 1 --eval-every 0 --ckpt-every 0 \
		--threads 1 --out "$work/$name" "$@" >"$work/$name.out" 2>"$work/$name.err" ||
		{ cat "$work/$name.err" >&2; exit 1; }
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run one 1 4
for z in 0 1 2; do
	run zero$z 2 2 --zero-stage "$z"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$work" "$model" <<'PY'
import glob, re, sys
work, model = sys.argv[1], sys.argv[2]
def run(name):
    out = open(f"{work}/{name}.out").read()
    m = re.search(r"memory per rank: parameters ([\d.]+) MiB, gradients ([\d.]+) MiB, "
                  r"optimizer state ([\d.]+) MiB", out)
    if not m:
        sys.exit(f"{name}: no memory line")
    steps = [float(s) for n, s in re.findall(r"^step +(\d+)/\d+ .*?\| ([\d.]+) ms \|", out, re.M)
             if int(n) > 1]
    if not steps:
        sys.exit(f"{name}: no step lines after step 1")
    rss = [int(open(f).read()) / 1024 for f in sorted(glob.glob(f"{work}/{name}.rss.*"))]
    return [float(x) for x in m.groups()], sum(steps) / len(steps), rss
rows = {n: run(n) for n in ("one", "zero0", "zero1", "zero2")}
print(f"| run ({model}, seq 64, global batch 4) | params MiB | grads MiB | optimizer MiB | "
      "peak RSS per rank MiB | step ms | optimizer vs stage 0 | RSS vs stage 0 | step vs 1 rank |")
print("|---|---|---|---|---|---|---|---|---|")
base_opt, base_rss, one_step = rows["zero0"][0][2], max(rows["zero0"][2]), rows["one"][1]
names = {"one": "1 rank, batch 4", "zero0": "2 ranks, ZeRO 0", "zero1": "2 ranks, ZeRO 1",
         "zero2": "2 ranks, ZeRO 2"}
for n, (mem, step, rss) in rows.items():
    print(f"| {names[n]} | {mem[0]:.1f} | {mem[1]:.1f} | {mem[2]:.1f} | "
          f"{' / '.join('%.0f' % r for r in rss)} | {step:.0f} | {mem[2] / base_opt:.2f} | "
          f"{max(rss) / base_rss:.2f} | {step / one_step:.2f} |")
PY
