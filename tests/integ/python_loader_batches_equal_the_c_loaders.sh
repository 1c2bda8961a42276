#!/usr/bin/env bash
# ferry.TokenLoader yields the C loader's batches bit for bit: the same inputs, targets, epoch
# and position as loader-dump (the C oracle) for every format, shuffled and in file order, on
# several ranks of several worlds, with a global batch of 2 micro-batches and across epoch ends;
# as torch tensors, as copies (lent=False) and as views of the ring (copy=False) too; and exactly
# the batches `ferry train` hashes at each step (--verbose prints each step's first
# micro-batch's FNV-1a), so the Python order is the trainer's. Where ferry._fast is built, the
# default mode's C path and its pure-Python twin (ferry._fast = None) give the same batches,
# positions and arrays (shape, dtype, flags), kept and compared after two epochs too.
. "$(dirname "$0")/python_lib.sh"
need_built "$FERRY"
need_python torch

"$PY" - "$T" <<'PY'
import os, sys, numpy as np, pyhelp
d = sys.argv[1]; rng = np.random.default_rng(7)
for sub in ("u16", "u32", "raw", "mega"):
    os.makedirs(os.path.join(d, sub))
for i, n in enumerate([40000, 1234, 25001, 39999]):
    pyhelp.llmc("%s/u16/s_%03d.bin" % (d, i), rng.integers(0, 65535, n), vocab=50000)
for i, n in enumerate([30000, 777, 20000]):
    pyhelp.llmc("%s/u32/s_%03d.bin" % (d, i), rng.integers(0, 2**31 - 1, n), u32=True)
for i, n in enumerate([20000, 9001]):
    rng.integers(0, 2**32 - 1, n).astype("<u4").tofile("%s/raw/r_%d.u32" % (d, i))
sizes = rng.integers(1, 300, 300)
pyhelp.megatron(d + "/mega/m", sizes, rng.integers(0, 65535, int(sizes.sum())))
PY

cat >"$T/compare.py" <<'PY'
import sys, numpy as np, torch, ferry, pyhelp
T, build = sys.argv[1], sys.argv[2]
# name: data, format, batch, seq_len, seed, rank, world, extra (global_batch, block_bytes,
# window_blocks, shuffle, buffers), steps (enough to cross at least one epoch end)
cases = [
    ("u16 one rank", "u16/*.bin", "auto", 8, 32, 3, 0, 1, dict(block_bytes=4096, window_blocks=3)),
    ("u16 rank 1 of 3, accum 2", "u16", "llmc", 5, 48, 7, 1, 3,
        dict(global_batch=30, block_bytes=8192, window_blocks=2)),
    ("u16 rank 2 of 3, default order", "u16/s_00*.bin", "auto", 4, 64, 11, 2, 3, {}),
    ("u16 file order rank 1 of 2", "u16", "auto", 6, 40, 1, 1, 2, dict(shuffle=False)),
    ("u32 rank 0 of 2", "u32/*.bin", "auto", 3, 100, 5, 0, 2,
        dict(block_bytes=20000, window_blocks=4, buffers=1)),
    ("raw u32", "raw/*.u32", "raw-u32", 7, 16, 9, 0, 1, dict(block_bytes=5000, window_blocks=5)),
    ("megatron rank 1 of 2", "mega/m.bin", "megatron", 2, 33, 13, 1, 2,
        dict(block_bytes=2048, window_blocks=3)),
]
for name, data, fmt, B, S, seed, rank, world, kw in cases:
    path = "%s/%s" % (T, data)
    l = ferry.TokenLoader(path, S, B, seed=seed, rank=rank, world=world, format=fmt, **kw)
    steps = int(l.steps_per_epoch) * 2 + 3  # two epoch ends
    if steps > 3000:
        raise SystemExit("%s: %d steps, make the case smaller" % (name, steps))
    extra = ["--seed", seed, "--rank", rank, "--world", world, "--format", fmt]
    if kw.get("shuffle", True):
        extra.append("--shuffle")
    for k, flag in (("global_batch", "--global-batch"), ("block_bytes", "--block-bytes"),
                    ("window_blocks", "--window-blocks"), ("buffers", "--buffers")):
        if k in kw:
            extra += [flag, kw[k]]
    want = pyhelp.c_dump(build, T + "/c.dump", path, B, S, steps, extra)
    for i, (e, p, x, y) in enumerate(want):
        gx, gy = l.next_batch()
        if (l.last_epoch, l.last_position) != (e, p):
            raise SystemExit("%s: batch %d at %d/%d, the C loader's at %d/%d" %
                             (name, i, l.last_epoch, l.last_position, e, p))
        if gx.dtype != np.int32 or gx.shape != (B, S) or not np.array_equal(gx, x) \
                or not np.array_equal(gy, y):
            raise SystemExit("%s: batch %d (epoch %d position %d) differs from the C loader's"
                             % (name, i, e, p))
    # Iterating gives one epoch from where the loader stands: here the rest of epoch 2.
    rest = list(l)
    if len(rest) != l.steps_per_epoch - 3 or l.position() != (3, 0):
        raise SystemExit("%s: iteration gave %d batches and stopped at %s" %
                         (name, len(rest), l.position()))
    l.close()
    print("ok: %s: %d batches equal the C loader's (%d steps an epoch)" %
          (name, len(want), l.steps_per_epoch))

# as_torch: the same batches as int32 tensors.
l = ferry.TokenLoader(T + "/u16/*.bin", 32, 8, seed=3, block_bytes=4096, window_blocks=3,
                      as_torch=True)
want = pyhelp.c_dump(build, T + "/c.dump", T + "/u16/*.bin", 8, 32, 20,
                     ["--seed", 3, "--shuffle", "--block-bytes", 4096, "--window-blocks", 3])
for i, (e, p, x, y) in enumerate(want):
    gx, gy = l.next_batch()
    if not isinstance(gx, torch.Tensor) or gx.dtype != torch.int32 or \
            not np.array_equal(gx.numpy(), x) or not np.array_equal(gy.numpy(), y):
        raise SystemExit("as_torch: batch %d differs or is no int32 tensor" % i)
print("ok: as_torch: 20 batches equal as int32 tensors")

# lent=False: the simple twin, fresh copies instead of the ring's lent buffers.
for as_torch in (False, True):
    l = ferry.TokenLoader(T + "/u16/*.bin", 32, 8, seed=3, block_bytes=4096, window_blocks=3,
                          lent=False, as_torch=as_torch)
    for i, (e, p, x, y) in enumerate(want):
        gx, gy = l.next_batch()
        gx, gy = (gx.numpy(), gy.numpy()) if as_torch else (gx, gy)
        if not np.array_equal(gx, x) or not np.array_equal(gy, y):
            raise SystemExit("lent=False: batch %d differs" % i)
    l.close()
print("ok: lent=False: 20 batches equal as copies, numpy and torch")

# copy=False: views of the C loader's ring, each equal to the C batch while it is current.
for as_torch in (False, True):
    l = ferry.TokenLoader(T + "/u16/*.bin", 32, 8, seed=3, block_bytes=4096, window_blocks=3,
                          copy=False, as_torch=as_torch)
    for i, (e, p, x, y) in enumerate(want):
        gx, gy = l.next_batch()
        gx, gy = (gx.numpy(), gy.numpy()) if as_torch else (gx, gy)
        if not np.array_equal(gx, x) or not np.array_equal(gy, y):
            raise SystemExit("copy=False: batch %d differs" % i)
        if not as_torch and gx.flags.writeable:
            raise SystemExit("copy=False: a numpy view is writable")
    l.close()
print("ok: copy=False: 20 batches equal as views, numpy and torch")

# ferry._fast against the pure-Python path, bit for bit: each batch as it comes, and all of
# two epochs kept (list) and compared at the end, shuffled and in file order, numpy and torch.
fast = ferry._fast
if fast is None:
    print("ok: no ferry._fast here (FERRY_PURE=1, or not built): the pure path was tested")
    sys.exit(0)
for kw in (dict(seed=3, block_bytes=4096, window_blocks=3, buffers=2),
           dict(shuffle=False, buffers=1), dict(seed=8, as_torch=True)):
    f = ferry.TokenLoader(T + "/u16/*.bin", 32, 8, **kw)
    ferry._fast = None
    p = ferry.TokenLoader(T + "/u16/*.bin", 32, 8, **kw)
    ferry._fast = fast
    if f._lender is None or p._lender is not None:
        raise SystemExit("ferry._fast = None did not choose the pure path")
    kf, kp = [], []
    for i in range(2 * int(f.steps_per_epoch)):
        a, b = f.next_batch(), p.next_batch()
        if (f.last_epoch, f.last_position) != (p.last_epoch, p.last_position):
            raise SystemExit("%s: batch %d at different positions" % (kw, i))
        for u, v in zip(a, b):
            if type(u) is not type(v) or u.dtype != v.dtype or u.shape != v.shape:
                raise SystemExit("%s: batch %d: %s %s %s, pure %s %s %s" %
                                 (kw, i, type(u), u.dtype, u.shape, type(v), v.dtype, v.shape))
            u, v = (u.numpy(), v.numpy()) if kw.get("as_torch") else (u, v)
            if u.tobytes() != v.tobytes() or u.flags.writeable != v.flags.writeable or \
                    not u.flags.c_contiguous:
                raise SystemExit("%s: batch %d differs between ferry._fast and pure" % (kw, i))
        kf.append(a)
        kp.append(b)
    f.close()
    p.close()
    for i, (a, b) in enumerate(zip(kf, kp)):
        if any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b)):
            raise SystemExit("%s: kept batch %d differs between ferry._fast and pure" % (kw, i))
    print("ok: ferry._fast equals the pure path: %d batches, kept (%s)" % (len(kf), kw))
PY
"$PY" "$T/compare.py" "$T" "$FERRY_BUILD" || fail "see above"
# The ring outlives a closed loader while a view of it is alive: its 256 KiB slots are
# mmap'd by malloc, so a view of a freed one would fault.
"$PY" -c "
import gc, ferry
l = ferry.TokenLoader('$T/u16/*.bin', 512, 64, copy=False)
kept = l.next_batch()
l.close(); del l; gc.collect()
print('ok: a view outlives its loader:', int(kept[0].sum()) + int(kept[1].sum()) > 0)" ||
	fail "a view of a closed loader's ring could not be read"

# ferry train's own batches: each step's FNV-1a of its first micro-batch's inputs (--verbose),
# one rank accumulating 2 micro-batches, past the end of an epoch.
# Byte-level shards (vocab 256) small enough that 30 steps cross two epoch ends.
"$PY" -c "
import numpy as np, pyhelp
rng = np.random.default_rng(3)
for i, n in enumerate([1800, 1000]):
    pyhelp.llmc('$T/train_%03d.bin' % i, rng.integers(0, 256, n), vocab=256)"
args=(--data "$T/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 4
	--total-batch-tokens 256 --steps 30 --warmup 2 --lr 3e-3 --seed 5 --eval-every 0
	--ckpt-every 0 --threads 1 --loader-block-bytes 4096 --loader-window-blocks 3 --verbose)
"$FERRY" train "${args[@]}" --out "$T/run" >"$T/train.out" 2>"$T/train.err" ||
	{ cat "$T/train.err" >&2; fail "ferry train failed"; }
grep -E "^rank 0 step [0-9]+: batch epoch" "$T/train.err" >"$T/steps" || true
[ "$(wc -l <"$T/steps")" -eq 30 ] || { cat "$T/train.err" >&2; fail "ferry train printed no batch hashes"; }
"$PY" - "$T" <<'PY' || fail "see above"
import re, sys, ferry
T = sys.argv[1]
def fnv(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h
l = ferry.TokenLoader(T + "/train_*.bin", 32, 4, seed=5, global_batch=8,
                      block_bytes=4096, window_blocks=3)
ends = 0
for line in open(T + "/steps"):
    step, e, p, h = re.match(r"rank 0 step (\d+): batch epoch (\d+) position (\d+) fnv (\w+)",
                             line).groups()
    x, _ = l.next_batch()
    got = (l.last_epoch, l.last_position, fnv(x.tobytes()))
    if got != (int(e), int(p), int(h, 16)):
        raise SystemExit("step %s: ferry train took epoch %s position %s fnv %s, python %d %d %016x"
                         % (step, e, p, h, *got))
    l.next_batch()  # the step's second micro-batch
    ends += l.last_position + 1 == l.steps_per_epoch
if ends < 2:
    raise SystemExit("the 30 steps crossed %d epoch ends, want 2" % ends)
print("ok: 30 steps (60 micro-batches, %d steps an epoch) equal ferry train's" %
      (l.steps_per_epoch // 2))
PY
pass "TokenLoader's batches are the C loader's and ferry train's, bit for bit"
