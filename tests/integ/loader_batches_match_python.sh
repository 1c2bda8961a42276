#!/usr/bin/env bash
# Batches from the loader (every format, shuffled and sequential, several ranks, io_uring and
# pread) equal batches computed independently in python/numpy from the same files, with the
# sample order re-implemented from its definition (a two-level shuffle: keyed Feistel
# permutations of blocks and of samples within windows; loader_i.h, struct sampler).
# Also checks `ferry data make` / `inspect` and their one-line errors.
set -euo pipefail
build=${FERRY_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
data_tool=$build/loader/ferry-data
dump=$build/loader/loader-dump
py=/usr/bin/python3
[ -x "$dump" ] && [ -x "$data_tool" ] || { echo "loader tools not built in $build" >&2; exit 1; }
tmp=$(mktemp -d /tmp/ferry_loader_integ.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 1. ferry data make from text; inspect agrees with numpy.
$py -c "
import random; random.seed(3)
words = ['ferry', 'loader', 'token', 'shard', 'byte', 'gpu', 'cache', 'é', '\n']
for i in range(3):
    open('$tmp/t%d.txt' % i, 'w').write(' '.join(random.choice(words) for _ in range(20000)))
"
"$data_tool" make --text "$tmp"/t0.txt "$tmp"/t1.txt "$tmp"/t2.txt --out "$tmp/llmc" \
	--val-fraction 0.1 --shard-tokens 100000 >"$tmp/make.out"
$py - "$tmp" <<'PY'
import sys, glob, numpy as np
d = sys.argv[1]
text = b''.join(open('%s/t%d.txt' % (d, i), 'rb').read() for i in range(3))
nval = int(0.1 * len(text) + 0.5)
def cat(split):
    out = []
    for p in sorted(glob.glob('%s/llmc/%s_*.bin' % (d, split))):
        h = np.fromfile(p, dtype='<i4', count=256)
        assert h[0] == 20240520 and h[1] == 1 and h[3] == 256, p
        t = np.fromfile(p, dtype='<u2', offset=1024)
        assert len(t) == h[2] and len(t) <= 100000, p
        out.append(t)
    return np.concatenate(out)
tr, va = cat('train'), cat('val')
ref = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
assert np.array_equal(tr, ref[:len(ref) - nval]) and np.array_equal(va, ref[len(ref) - nval:])
print('make: %d train + %d val tokens match the text bytes' % (len(tr), len(va)))
PY
"$data_tool" inspect "$tmp/llmc/train_000000.bin" >"$tmp/inspect.out"
want=$($py -c "
import numpy as np
t = np.fromfile('$tmp/llmc/train_000000.bin', dtype='<u2', offset=1024)
print('uint16 tokens, %d tokens, vocab 256, first: %s' % (len(t), ' '.join(map(str, t[:16]))))")
grep -qF "llm.c v1, $want" "$tmp/inspect.out" || { echo "inspect: got $(cat "$tmp/inspect.out"), want $want" >&2; exit 1; }
head -c 3000 "$tmp/llmc/train_000000.bin" >"$tmp/trunc.bin"
if "$data_tool" inspect "$tmp/trunc.bin" 2>"$tmp/err"; then echo "truncated shard accepted" >&2; exit 1; fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "trunc.bin: llm.c header says" "$tmp/err" ||
	{ echo "bad error: $(cat "$tmp/err")" >&2; exit 1; }
if "$data_tool" make --out "$tmp/x" 2>/dev/null; then echo "make without --text accepted" >&2; exit 1; fi
echo "data make/inspect: ok"

# 2. Other formats, written by numpy: llm.c uint32, raw uint16, Megatron uint16 pair.
$py - "$tmp" <<'PY'
import sys, os, struct, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(11)
os.makedirs(d + '/u32'); os.makedirs(d + '/raw'); os.makedirs(d + '/mega')
for i, n in enumerate([7000, 333, 12000]):
    t = rng.integers(0, 2**31 - 1, size=n).astype('<u4')
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240801, 7, n]
    with open('%s/u32/s_%03d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
for i, n in enumerate([5000, 9001]):
    rng.integers(0, 65535, size=n).astype('<u2').tofile('%s/raw/r_%d.u16' % (d, i))
sizes = rng.integers(1, 300, size=211).astype('<i4')
toks = rng.integers(0, 65535, size=int(sizes.sum())).astype('<u2')
ptr = (np.concatenate([[0], np.cumsum(sizes)[:-1]]) * 2).astype('<i8')
with open(d + '/mega/m.idx', 'wb') as f:
    f.write(b'MMIDIDX\x00\x00' + struct.pack('<QBQQ', 1, 8, len(sizes), len(sizes) + 1))
    f.write(sizes.tobytes() + ptr.tobytes() + np.arange(len(sizes) + 1, dtype='<i8').tobytes())
toks.tofile(d + '/mega/m.bin')
PY

cat >"$tmp/oracle.py" <<'PY'
# The oracle: files read with numpy, the order re-derived from its definition (loader_i.h,
# struct sampler): per epoch, the samples rotated by an offset; blocks of S samples (S a
# multiple of B) permuted by a keyed Feistel network; each rank's window of G blocks
# permuted within; the rest after the whole windows is the tail, a contiguous share per rank.
import sys, glob, os, numpy as np
M64 = (1 << 64) - 1
GOLD = 0x9e3779b97f4a7c15
def mix(x):
    x &= M64
    x ^= x >> 30; x = (x * 0xbf58476d1ce4e5b9) & M64
    x ^= x >> 27; x = (x * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)
def feistel(key, n, x):
    h = 1
    while h < 32 and 4 ** h < n: h += 1
    mask = (1 << h) - 1
    while True:
        l, r = (x >> h) & mask, x & mask
        for rd in range(4):
            l, r = r, l ^ (mix(key ^ (rd << 56) ^ r) & mask)
        x = (l << h) | r
        if x < n: return x
class Order:
    def __init__(s, n, B, W, rank, seed, S, G):
        s.n, s.B, s.W, s.rank, s.seed, s.G = n, B, W, rank, seed, G
        s.S = -(-max(S, 1) // B) * B
        s.steps = n // (B * W)
        s.wins = n // (s.S * G * W)
        s.tail = s.steps * B - s.wins * s.S * G
    def sample(s, epoch, pos, j):
        key = mix(s.seed ^ mix(epoch + GOLD))
        rot = mix(key ^ 0x726f746174696f6e) % s.n
        x = pos * s.B + j                        # the rank's own sample index
        w = min(x // (s.S * s.G), s.wins)
        t = x - w * s.S * s.G
        size = s.S * s.G if w < s.wins else s.tail
        t = feistel(mix(key ^ mix(w ^ mix(s.rank + GOLD))), size, t)
        if w < s.wins:
            nblocks = s.wins * s.W * s.G
            blk = feistel(mix(key ^ 0x626c6f636b730000), nblocks,
                          (w * s.W + s.rank) * s.G + t // s.S)
            v = blk * s.S + t % s.S
        else:
            v = s.wins * s.S * s.G * s.W + s.rank * s.tail + t
        return (v + rot) % s.n
dump, paths, fmt, B, T, seed, shuffle, rank, world, block_bytes, win_blocks = sys.argv[1:12]
B, T, seed, rank, world = int(B), int(T), int(seed), int(rank), int(world)
shuffle = shuffle == '1'
files = sorted(glob.glob(paths + '/*')) if os.path.isdir(paths) else sorted(glob.glob(paths))
shards = []
for p in files:
    if fmt == 'llmc':
        h = np.fromfile(p, dtype='<i4', count=256)
        dt = '<u2' if h[0] == 20240520 else '<u4'
        shards.append(np.fromfile(p, dtype=dt, offset=1024))
    elif fmt == 'raw-u16':
        shards.append(np.fromfile(p, dtype='<u2'))
    elif fmt == 'megatron' and p.endswith('.bin'):
        shards.append(np.fromfile(p, dtype='<u2'))
per = [(len(s) - 1) // T if len(s) > T else 0 for s in shards]
n = sum(per); cum = np.cumsum([0] + per)
steps = n // (B * world)
width = shards[0].dtype.itemsize
order = Order(n, B, world, rank, seed, int(block_bytes) // (T * width), int(win_blocks))
raw = np.fromfile(dump, dtype='<i4')
rec = 4 + 2 * B * T
assert len(raw) % rec == 0
nb = len(raw) // rec
start = None
for i in range(nb):
    r = raw[i * rec:(i + 1) * rec]
    epoch = int(r[0]) | (int(r[1]) << 32); pos = int(r[2]) | (int(r[3]) << 32)
    if start is None: start = epoch * steps + pos
    assert (epoch, pos) == divmod(start + i, steps), (i, epoch, pos)
    inp = r[4:4 + B * T].reshape(B, T); tgt = r[4 + B * T:].reshape(B, T)
    for j in range(B):
        g = order.sample(epoch, pos, j) if shuffle else (pos * world + rank) * B + j
        s = int(np.searchsorted(cum, g, side='right') - 1)
        while per[s] == 0: s -= 1
        o = (g - cum[s]) * T
        want = shards[s][o:o + T + 1].astype(np.int64)
        if not (np.array_equal(inp[j], want[:-1]) and np.array_equal(tgt[j], want[1:])):
            sys.exit('batch %d (epoch %d pos %d) row %d differs from the files' % (i, epoch, pos, j))
print('%d batches match (%s)' % (nb, 'S=%d G=%d, %d whole windows, tail %d' %
      (order.S, order.G, order.wins, order.tail) if shuffle else 'file order'))
PY

check() { # name paths fmt B T seed shuffle rank world steps [block-bytes window-blocks [epoch pos]]
	local name=$1 paths=$2 fmt=$3 B=$4 T=$5 seed=$6 shuf=$7 rank=$8 world=$9 steps=${10}
	local bb=${11:-2097152} wb=${12:-8} flag="" seek=()
	[ "$shuf" = 1 ] && flag=--shuffle
	[ -n "${13:-}" ] && seek=(--epoch "${13}" --position "${14}")
	for io in io_uring pread; do
		FERRY_LOADER_IO=$io \
			"$dump" --data "$paths" --format "$fmt" --batch "$B" --seq "$T" \
			--block-bytes "$bb" --window-blocks "$wb" \
			--seed "$seed" $flag --rank "$rank" --world "$world" --steps "$steps" \
			"${seek[@]}" --out "$tmp/$name.$io" 2>"$tmp/$name.log" ||
			{ cat "$tmp/$name.log" >&2; exit 1; }
	done
	cmp -s "$tmp/$name.io_uring" "$tmp/$name.pread" || { echo "$name: io_uring != pread" >&2; exit 1; }
	printf '%s: ' "$name"
	$py "$tmp/oracle.py" "$tmp/$name.io_uring" "$paths" "$fmt" "$B" "$T" "$seed" "$shuf" "$rank" \
		"$world" "$bb" "$wb"
}
# Default blocks (2 MiB) make these small sets a tail only; small blocks give whole windows,
# several pieces per window where shards end, and the epoch boundary within the run.
check text_shuffled  "$tmp/llmc/train_*.bin" llmc 4 64 7 1 0 1 300
check text_windows   "$tmp/llmc/train_*.bin" llmc 4 64 7 1 0 1 700 4096 3
check text_seq       "$tmp/llmc/train_*.bin" llmc 4 64 7 0 0 1 300
check text_rank2of3  "$tmp/llmc/train_*.bin" llmc 3 32 9 1 2 3 200 2000 2
check text_resume_mid "$tmp/llmc/train_*.bin" llmc 4 64 7 1 0 1 40 4096 3 1 37
check u32_shuffled   "$tmp/u32"              llmc 5 100 1 1 1 2 150 6000 4
check raw_seq        "$tmp/raw/*.u16"        raw-u16 2 50 0 0 0 1 200
check raw_shuffled   "$tmp/raw"              raw-u16 2 50 3 1 0 1 200 1000 2
check mega_shuffled  "$tmp/mega/m.bin"       megatron 4 128 5 1 0 1 100 3000 5
check mega_auto_seq  "$tmp/mega"             megatron 4 128 5 0 1 2 100
echo "loader batches match python: ok"
