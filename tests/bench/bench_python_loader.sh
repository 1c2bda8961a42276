#!/usr/bin/env bash
# Tokens/s of ferry.TokenLoader from Python against the C loader it wraps (loader-dump --bench),
# in one run, on the same shards in the page cache with the same settings (shuffled, ferry
# train's order): the ratio Python / C and the load average beside it. Each case runs REPS
# times, interleaved, and its best run counts (the machine is shared). The bar (>= 0.9) is on
# the default mode, which yields arrays the caller owns by lending it the ring's buffers (a
# spare takes each one's place): no copy, like the C consumer, its per-batch work in C
# (ferry._fast; the script says if the package fell back to Python). Printed beside, without a
# bar: the same mode on the pure-Python path (FERRY_PURE=1),
# copy=False (views of the ring, valid until the next batch) and lent=False (the simple twin,
# which copies each batch, 2 x B x T int32, into fresh numpy arrays: CPU time the C loader's
# reader threads would otherwise have, which shows where cores are few).
#   usage: bench_python_loader.sh [MB of tokens, default 128] [batch, default 16] [seq, default 1024]
#   BENCH_REPS (default 5), BENCH_EPOCHS (default 16).
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
# BENCH_EPOCHS epochs (default 16; the loaders cross epochs by themselves): about a second a
# run at the default size, so that the machine's noise (the C side alone varies by 40% over
# runs of 0.15 s) does not decide the ratio.
epochs=${BENCH_EPOCHS:-16}
fast=$(FERRY_LIB=$lib PYTHONPATH=$src/loader/python PYTHONDONTWRITEBYTECODE=1 "$PY" -c "
import ferry; print('yes' if ferry._fast else 'no')")
[ "$fast" = yes ] || echo "bench_python_loader: ferry._fast is not built: the default line is the pure path" >&2
steps=$(FERRY_LIB=$lib PYTHONPATH=$src/loader/python PYTHONDONTWRITEBYTECODE=1 "$PY" -c "
import ferry; print($epochs * ferry.TokenLoader('$data', $S, $B).steps_per_epoch)")

c_run() {
	"$dump" --data "$data" --batch "$B" --seq "$S" --seed 1 --shuffle --steps "$steps" --bench \
		2>/dev/null | sed -n 's/.*tokens_per_s \([0-9]*\).*/\1/p'
}
py_run() { # TokenLoader's keyword arguments; FERRY_PURE=1 in the environment: no ferry._fast
	FERRY_LIB=$lib PYTHONPATH=$src/loader/python PYTHONDONTWRITEBYTECODE=1 "$PY" -c "
import time, ferry
l = ferry.TokenLoader('$data', $S, $B, seed=1, $1)
t0 = time.monotonic()
for _ in range($steps):
    x, y = l.next_batch()
dt = time.monotonic() - t0
print(int($steps * $B * $S / dt))"
}
best() { [ -z "$1" ] || [ "$2" -gt "$1" ] && echo "$2" || echo "$1"; }
c=""
lent=""
pure=""
view=""
copy=""
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq "$reps"); do
	c=$(best "$c" "$(c_run)")
	lent=$(best "$lent" "$(py_run copy=True)")
	pure=$(best "$pure" "$(FERRY_PURE=1 py_run copy=True)")
	view=$(best "$view" "$(py_run copy=False)")
	copy=$(best "$copy" "$(py_run lent=False)")
done
load=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { awk -v p="$1" -v c="$c" 'BEGIN { printf "%.3f", p / c }'; }
rl=$(ratio "$lent")
rp=$(ratio "$pure")
rv=$(ratio "$view")
rc=$(ratio "$copy")
echo "| $mb MB of u16 tokens in the page cache, B=$B T=$S, shuffled, $steps batches, best of $reps | tokens/s | / C |"
echo "|---|---|---|"
echo "| C loader (loader-dump --bench) | $c | 1 |"
echo "| Python TokenLoader, default (lent ring buffers, the caller's to keep; ferry._fast) | $lent | $rl |"
echo "| Python TokenLoader, default on the pure-Python path (FERRY_PURE=1) | $pure | $rp |"
echo "| Python TokenLoader, copy=False (views of the ring) | $view | $rv |"
echo "| Python TokenLoader, lent=False (fresh numpy copies) | $copy | $rc |"
echo "ratio python / C: $rl by default (bar >= 0.9), $rp on the pure path, $rv with views, $rc with copies; load average $load0 before, $load after; $(nproc) cores"
awk -v r="$rl" 'BEGIN { exit !(r >= 0.9) }' || { echo "bench_python_loader: below the 0.9 bar" >&2; exit 1; }
