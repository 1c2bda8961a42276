#!/usr/bin/env bash
# Tokens/s of ferry.TokenLoader from Python against the C loader it wraps (loader-dump --bench),
# in one run, on the same shards in the page cache with the same settings (shuffled, ferry
# train's order): the ratio Python / C and the load average beside it. Each case runs REPS
# times, interleaved, and its best run counts (the machine is shared). Like the C consumer,
# which takes the ring's buffers as they are, copy=False takes views of them: that ratio has
# the bar (>= 0.9). The default, copy=True, also copies each batch into fresh numpy arrays
# (2 x B x T int32): its ratio is printed beside, without a bar; it costs CPU time the C
# loader's reader threads would otherwise have, which shows where cores are few.
#   usage: bench_python_loader.sh [MB of tokens, default 128] [batch, default 16] [seq, default 1024]
#   BENCH_REPS (default 5).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${FERRY_BUILD:-$src/build}
mb=${1:-128}
B=${2:-16}
S=${3:-1024}
reps=${BENCH_REPS:-5}
PY=/usr/bin/python3
dump=$build/loader/loader-dump
lib=$build/loader/libferry_loader.so
if [ ! -x "$dump" ] || [ ! -f "$lib" ]; then
	echo "bench_python_loader: build $dump and $lib first" >&2
	exit 1
fi
"$PY" -c "import numpy" 2>/dev/null || { echo "bench_python_loader: no numpy for $PY" >&2; exit 1; }
tmp=$(mktemp -d /tmp/ferry_bench_python.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# uint16 llm.c shards of 16M tokens (32 MB) each, then read once into the page cache.
"$PY" - "$tmp" "$mb" <<'PY'
import sys, numpy as np
d, mb = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(max(1, mb // 32)):
    t = rng.integers(0, 50257, size=16 << 20).astype('<u2')
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, t.size]
    with open('%s/s_%04d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
cat "$tmp"/s_*.bin >/dev/null
data="$tmp/s_*.bin"
# Two epochs (the C loader crosses epochs by itself): long enough to time on a busy machine.
steps=$(FERRY_LIB=$lib PYTHONPATH=$src/loader/python PYTHONDONTWRITEBYTECODE=1 "$PY" -c "
import ferry; print(2 * ferry.TokenLoader('$data', $S, $B).steps_per_epoch)")

c_run() {
	"$dump" --data "$data" --batch "$B" --seq "$S" --seed 1 --shuffle --steps "$steps" --bench \
		2>/dev/null | sed -n 's/.*tokens_per_s \([0-9]*\).*/\1/p'
}
py_run() { # copy: True or False
	FERRY_LIB=$lib PYTHONPATH=$src/loader/python PYTHONDONTWRITEBYTECODE=1 "$PY" -c "
import time, ferry
l = ferry.TokenLoader('$data', $S, $B, seed=1, copy=$1)
t0 = time.monotonic()
for _ in range($steps):
    x, y = l.next_batch()
dt = time.monotonic() - t0
print(int($steps * $B * $S / dt))"
}
best() { [ -z "$1" ] || [ "$2" -gt "$1" ] && echo "$2" || echo "$1"; }
c=""
view=""
copy=""
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq "$reps"); do
	c=$(best "$c" "$(c_run)")
	view=$(best "$view" "$(py_run False)")
	copy=$(best "$copy" "$(py_run True)")
done
load=$(cut -d' ' -f1-3 /proc/loadavg)
rv=$(awk -v p="$view" -v c="$c" 'BEGIN { printf "%.3f", p / c }')
rc=$(awk -v p="$copy" -v c="$c" 'BEGIN { printf "%.3f", p / c }')
echo "| $mb MB of u16 tokens in the page cache, B=$B T=$S, shuffled, $steps batches, best of $reps | tokens/s | / C |"
echo "|---|---|---|"
echo "| C loader (loader-dump --bench) | $c | 1 |"
echo "| Python TokenLoader, copy=False (views of the ring) | $view | $rv |"
echo "| Python TokenLoader, copy=True (fresh numpy arrays, the default) | $copy | $rc |"
echo "ratio python / C: $rv with views (bar >= 0.9), $rc with copies; load average $load0 before, $load after; $(nproc) cores"
awk -v r="$rv" 'BEGIN { exit !(r >= 0.9) }' || { echo "bench_python_loader: below the 0.9 bar" >&2; exit 1; }
