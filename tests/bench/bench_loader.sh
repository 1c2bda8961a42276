#!/usr/bin/env bash
# Loader throughput (CPU path) from shards in the page cache against `dd` of the same shards
# in the same run: prints tokens/s of both, their ratio (target >= 0.8) and the data-wait per
# batch. Sequential order is the like-for-like comparison with dd; the shuffled order (one
# read per sample) is printed too.  usage: bench_loader.sh [MB of tokens, default 256]
set -euo pipefail
build=${FERRY_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
mb=${1:-256}
dump=$build/loader/loader-dump
tmp=$(mktemp -d /tmp/ferry_bench_loader.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# uint16 llm.c shards of 16M tokens (32 MB) each.
/usr/bin/python3 - "$tmp" "$mb" <<'PY'
import sys, numpy as np
d, mb = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
n_shards = max(1, mb // 32)
for i in range(n_shards):
    t = rng.integers(0, 50257, size=16 << 20).astype('<u2')
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, t.size]
    with open('%s/s_%04d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
cat "$tmp"/s_*.bin >/dev/null # into the page cache
bytes=$(cat "$tmp"/s_*.bin | wc -c)
tokens=$(( (bytes - 1024 * $(ls "$tmp"/s_*.bin | wc -l)) ))
tokens=$(( tokens / 2 ))

best_dd=0
for _ in 1 2 3; do
	t0=$(date +%s.%N)
	for f in "$tmp"/s_*.bin; do dd if="$f" of=/dev/null bs=4M status=none; done
	t1=$(date +%s.%N)
	r=$(/usr/bin/python3 -c "print(int($tokens / ($t1 - $t0)))")
	[ "$r" -gt "$best_dd" ] && best_dd=$r
done

B=64 T=1024
steps=$(( tokens / (B * T) - 1 ))
best_seq=0 wait_seq=0
for _ in 1 2 3; do
	out=$("$dump" --data "$tmp" --batch $B --seq $T --steps $steps --buffers 4 --bench)
	r=$(echo "$out" | awk '{printf "%.0f", $6}')
	if [ "$r" -gt "$best_seq" ]; then best_seq=$r; wait_seq=$(echo "$out" | awk '{print $8}'); fi
done
shuf=0 wait_shuf=0
for _ in 1 2 3; do
	out=$("$dump" --data "$tmp" --batch $B --seq $T --steps $(( steps / 2 )) --shuffle --bench)
	r=$(echo "$out" | awk '{printf "%.0f", $6}')
	if [ "$r" -gt "$shuf" ]; then shuf=$r; wait_shuf=$(echo "$out" | awk '{print $8}'); fi
done

/usr/bin/python3 - "$best_dd" "$best_seq" "$wait_seq" "$shuf" "$wait_shuf" "$mb" <<'PY'
import sys
dd, seq, wseq, shuf, wshuf, mb = sys.argv[1:]
dd, seq, shuf = int(dd), int(seq), int(shuf)
print('bench_loader: %s MB of uint16 shards in page cache, B=64 T=1024, default readers (FERRY_LOADER_THREADS), best of 3' % mb)
print('  dd bs=4M          %8.1f Mtokens/s' % (dd / 1e6))
print('  loader sequential %8.1f Mtokens/s  ratio %.2f (target >= 0.8)  wait %s ms/batch' % (seq / 1e6, seq / dd, wseq))
print('  loader shuffled   %8.1f Mtokens/s  ratio %.2f                   wait %s ms/batch' % (shuf / 1e6, shuf / dd, wshuf))
PY
