#!/usr/bin/env bash
# Overlapped gradient reduction on CPU ranks: 2 MPI ranks train d6 shapes (6 layers, 6 heads, 384
# channels, 10.8M parameters, 43 MB of gradients) with --overlap on (buckets all-reduced while
# backward runs) and --overlap off (one all-reduce after it), and print per run the mean step
# time and the mean exposed communication (the step's time inside the reduction calls) against
# the time the reductions were in flight, then the ratios on/off. Step 1 is left out (warm-up).
#   usage: bench_overlap.sh [STEPS (default 4)] [THREADS per rank (default 1)] [BUCKET_KIB]
# On a shared 2-core machine the two ranks and their threads take all the cores, and Open MPI
# moves a nonblocking collective only inside MPI calls (once per layer here), so the numbers are
# rough: compare only within one run, beside the load average printed with them.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$src/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
[ -x "$FERRY" ] || { echo "FAIL: no ferry binary at $FERRY" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun" >&2; exit 77; }
steps=${1:-4}
threads=${2:-1}
bucket=${3:-25600}
work=$(mktemp -d /tmp/ferry_bench_overlap.XXXXXX)
trap 'rm -rf "$work"' EXIT
source "$src/tests/lib/llmc_shards.sh"
make_shards "$work/data"

run() { # name, options...
	local name=$1
	shift
	mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS="$threads" -np 2 \
		"$FERRY" train --data "$work/data/train_*.bin" --model d6 --seq-len 64 --batch 2 \
		--steps "$steps" --warmup 1 --eval-every 0 --ckpt-every 0 --threads "$threads" \
		--bucket-kib "$bucket" --out "$work/$name" "$@" >"$work/$name.out" 2>"$work/$name.err" ||
		{ cat "$work/$name.err" >&2; exit 1; }
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run off --overlap off
run on --overlap on
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
def stats(name):
    rows = []
    for l in open(f"{work}/{name}.out"):
        m = re.search(r"^step +(\d+)/\d+ .*\| ([\d.]+) ms \|.*\| comm ([\d.]+) of ([\d.]+) ms, (\d+) bucket", l)
        if m and int(m.group(1)) > 1:
            rows.append([float(m.group(i)) for i in (2, 3, 4, 5)])
    if not rows:
        sys.exit(f"{name}: no step lines after step 1")
    n = len(rows)
    return [sum(r[i] for r in rows) / n for i in range(4)] + [n]
off, on = stats("off"), stats("on")
for name, s in (("overlap off", off), ("overlap on", on)):
    print(f"{name:12s} step {s[0]:8.1f} ms | comm exposed {s[1]:7.2f} of {s[2]:7.2f} ms in flight "
          f"| {int(s[3])} bucket(s) | {s[4]} steps")
print(f"ratio on/off: step time {on[0] / off[0]:.3f}, exposed communication "
      f"{on[1] / off[1] if off[1] > 0 else float('nan'):.3f}")
PY
