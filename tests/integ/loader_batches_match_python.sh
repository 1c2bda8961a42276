#!/usr/bin/env bash
# Batches from the loader (every format, shuffled and sequential, several ranks, io_uring and
# pread) equal batches computed independently in python/numpy from the same files, with the
# sample order re-implemented from its definition (a two-level shuffle: keyed Feistel
# permutations of blocks and of samples within windows, one order for every layout; loader_i.h,
# struct sampler).
# Also checks `ferry data make` / `inspect` and their one-line errors.
. "$(dirname "$0")/lib.sh"
data_tool=$FERRY_BUILD/loader/ferry-data
dump=$FERRY_BUILD/loader/loader-dump
need_built "$data_tool" "$dump"
need_python numpy

# 1. ferry data make from text; inspect agrees with numpy.
"$PY" -c "
import random; random.seed(3)
words = ['ferry', 'loader', 'token', 'shard', 'byte', 'gpu', 'cache', 'é', '\n']
for i in range(3):
    open('$T/t%d.txt' % i, 'w').write(' '.join(random.choice(words) for _ in range(20000)))
"
"$data_tool" make --text "$T"/t0.txt "$T"/t1.txt "$T"/t2.txt --out "$T/llmc" \
	--val-fraction 0.1 --shard-tokens 100000 >"$T/make.out"
"$PY" - "$T" <<'PY'
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
"$data_tool" inspect "$T/llmc/train_000000.bin" >"$T/inspect.out"
want=$("$PY" -c "
import numpy as np
t = np.fromfile('$T/llmc/train_000000.bin', dtype='<u2', offset=1024)
print('uint16 tokens, %d tokens, vocab 256, first: %s' % (len(t), ' '.join(map(str, t[:16]))))")
grep -qF "llm.c v1, $want" "$T/inspect.out" || fail "inspect: got $(cat "$T/inspect.out"), want $want"
head -c 3000 "$T/llmc/train_000000.bin" >"$T/trunc.bin"
if "$data_tool" inspect "$T/trunc.bin" 2>"$T/err"; then fail "truncated shard accepted"; fi
[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "trunc.bin: llm.c header says" "$T/err" ||
	fail "bad error: $(cat "$T/err")"
if "$data_tool" make --out "$T/x" 2>/dev/null; then fail "make without --text accepted"; fi
log "data make/inspect: ok"

# 2. Other formats, written by numpy: llm.c uint32, raw uint16, Megatron uint16 pair.
"$PY" - "$T" <<'PY'
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

cat >"$T/oracle.py" <<'PY'
# The oracle: files read with numpy, the order re-derived from its definition (loader_i.h,
# struct sampler): one order per epoch, the same for every layout; rank r's batch at position
# p holds its positions k = (p * W + r) * B + j. The order: the samples rotated by an offset;
# blocks of S samples permuted by a keyed Feistel network; window w (G blocks of that order)
# permuted within; the rest after the whole windows is the tail window. An epoch uses whole
# global batches (gb samples) only.
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
    def __init__(s, n, B, W, rank, seed, S, G, gb):
        s.n, s.B, s.W, s.rank, s.seed, s.G = n, B, W, rank, seed, G
        s.S = max(S, 1)
        gb = gb or B * W
        s.steps = n // gb * gb // (B * W)
        s.wins = n // (s.S * G)
        s.tail = n - s.wins * s.S * G
    def sample(s, epoch, pos, j):
        key = mix(s.seed ^ mix(epoch + GOLD))
        rot = mix(key ^ 0x726f746174696f6e) % s.n
        k = (pos * s.W + s.rank) * s.B + j          # the position in the epoch's order
        w = min(k // (s.S * s.G), s.wins)
        t = k - w * s.S * s.G
        size = s.S * s.G if w < s.wins else s.tail
        t = feistel(mix(key ^ mix(w + GOLD)), size, t)
        if w < s.wins:
            blk = feistel(mix(key ^ 0x626c6f636b730000), s.wins * s.G, w * s.G + t // s.S)
            v = blk * s.S + t % s.S
        else:
            v = s.wins * s.S * s.G + t
        return (v + rot) % s.n
dump, paths, fmt, B, T, seed, shuffle, rank, world, block_bytes, win_blocks, gb = sys.argv[1:13]
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
width = shards[0].dtype.itemsize
order = Order(n, B, world, rank, seed, int(block_bytes) // (T * width), int(win_blocks), int(gb))
steps = order.steps
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
print('%d batches match (%s, %d a rank an epoch)' % (nb, 'S=%d G=%d, %d whole windows, tail %d' %
      (order.S, order.G, order.wins, order.tail) if shuffle else 'file order', steps))
PY

check() { # name paths fmt B seq seed shuffle rank world steps [block-bytes window-blocks [epoch pos [global-batch]]]
	local name=$1 paths=$2 fmt=$3 B=$4 seq=$5 seed=$6 shuf=$7 rank=$8 world=$9 steps=${10}
	local bb=${11:-2097152} wb=${12:-8} gb=${15:-0} flag="" seek=()
	[ "$shuf" = 1 ] && flag=--shuffle
	[ -n "${13:-}" ] && seek=(--epoch "${13}" --position "${14}")
	for io in io_uring pread; do
		FERRY_LOADER_IO=$io \
			"$dump" --data "$paths" --format "$fmt" --batch "$B" --seq "$seq" \
			--block-bytes "$bb" --window-blocks "$wb" \
			--seed "$seed" $flag --rank "$rank" --world "$world" --steps "$steps" \
			--global-batch "$gb" \
			"${seek[@]}" --out "$T/$name.$io" 2>"$T/$name.log" ||
			{ cat "$T/$name.log" >&2; fail "$name: loader-dump with $io failed"; }
	done
	cmp -s "$T/$name.io_uring" "$T/$name.pread" || fail "$name: io_uring != pread"
	printf '%s: ' "$name"
	"$PY" "$T/oracle.py" "$T/$name.io_uring" "$paths" "$fmt" "$B" "$seq" "$seed" "$shuf" "$rank" \
		"$world" "$bb" "$wb" "$gb" || fail "$name: the loader's batches differ from the files"
}
# Default blocks (2 MiB) make these small sets a tail only; small blocks give whole windows,
# several pieces per window where shards end, and the epoch boundary within the run.
check text_shuffled  "$T/llmc/train_*.bin" llmc 4 64 7 1 0 1 300
check text_windows   "$T/llmc/train_*.bin" llmc 4 64 7 1 0 1 700 4096 3
check text_seq       "$T/llmc/train_*.bin" llmc 4 64 7 0 0 1 300
check text_rank2of3  "$T/llmc/train_*.bin" llmc 3 32 9 1 2 3 200 2000 2
check text_resume_mid "$T/llmc/train_*.bin" llmc 4 64 7 1 0 1 40 4096 3 1 37
# rank 1 of 2 of batch 3 with 12 samples a step (2 micro-batches): windows of 93 samples are
# no multiple of the 6 a position takes, so batches straddle windows; from position 1300 of
# 1404, 300 positions cross into the next epoch (it ends after whole steps of 12)
check text_global12  "$T/llmc/train_*.bin" llmc 3 32 7 1 1 2 300 2000 3 0 1300 12
# windows of 2 samples, smaller than a batch: every batch is read a row at a time
check text_tiny_windows "$T/llmc/train_*.bin" llmc 4 64 7 1 0 1 50 128 2
check u32_shuffled   "$T/u32"              llmc 5 100 1 1 1 2 150 6000 4
check raw_seq        "$T/raw/*.u16"        raw-u16 2 50 0 0 0 1 200
check raw_shuffled   "$T/raw"              raw-u16 2 50 3 1 0 1 200 1000 2
check mega_shuffled  "$T/mega/m.bin"       megatron 4 128 5 1 0 1 100 3000 5
check mega_auto_seq  "$T/mega"             megatron 4 128 5 0 1 2 100
pass "loader batches match python"
