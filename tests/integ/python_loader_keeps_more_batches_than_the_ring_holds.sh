#!/usr/bin/env bash
# The default TokenLoader lends the ring's buffers to its batches (a spare takes each one's
# place) instead of copying them: a caller that keeps every batch (list(loader), two epochs,
# with rings of 1 to 3 buffers) still holds the C loader's batches bit for bit (loader-dump,
# the oracle), none overwritten by a later one, and it never waits for a buffer it holds.
# Shuffled, in file order (one run per batch, where targets are inputs shifted by one in the
# same memory: each gets arrays of its own, a write to inputs leaves targets alone) and as torch
# tensors. A batch kept only through a slice or a tensor of its inputs stays intact while the
# buffers of the batches let go are reused; one kept across a load_state_dict() seek too.
. "$(dirname "$0")/python_lib.sh"
need_python torch

timeout 300 "$PY" - "$T" <<'PY'
import gc, os, sys, numpy as np, torch, ferry, pyhelp
T = sys.argv[1]
build = os.environ["FERRY_BUILD"]
rng = np.random.default_rng(11)
for i, n in enumerate([20000, 777, 13001]):
    pyhelp.llmc("%s/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
data = T + "/s_*.bin"


def oracle(B, S, steps, kw):
    extra = ["--seed", kw.get("seed", 1)]
    if kw.get("shuffle", True):
        extra.append("--shuffle")
    for k, flag in (("block_bytes", "--block-bytes"), ("window_blocks", "--window-blocks"),
                    ("buffers", "--buffers")):
        if k in kw:
            extra += [flag, kw[k]]
    return pyhelp.c_dump(build, T + "/c.dump", data, B, S, steps, extra)


def np_of(a):
    return a.numpy() if isinstance(a, torch.Tensor) else a


def check(what, got, want):
    for i, ((x, y), (e, p, wx, wy)) in enumerate(zip(got, want)):
        if not np.array_equal(np_of(x), wx) or not np.array_equal(np_of(y), wy):
            raise SystemExit("%s: kept batch %d (epoch %d position %d) is no longer the C "
                             "loader's" % (what, i, e, p))


cases = [
    ("shuffled, 2 buffers", 4, 64, dict(seed=3, block_bytes=4096, window_blocks=3, buffers=2)),
    ("file order, 1 buffer", 5, 48, dict(shuffle=False, buffers=1)),
    ("torch tensors, 3 buffers", 3, 100,
        dict(seed=9, block_bytes=8192, window_blocks=2, buffers=3, as_torch=True)),
]
for name, B, S, kw in cases:
    l = ferry.TokenLoader(data, S, B, **kw)
    spe = int(l.steps_per_epoch)
    want = oracle(B, S, 2 * spe, kw)
    kept = list(l) + list(l)  # two whole epochs, every batch held to the end
    if len(kept) != 2 * spe:
        raise SystemExit("%s: %d batches in two epochs, want %d" % (name, len(kept), 2 * spe))
    check(name, kept, want)
    # The caller's to write: a write to inputs changes neither its targets nor another batch.
    for x, y in kept:
        x[:] = -1
    for i, ((x, y), (e, p, wx, wy)) in enumerate(zip(kept, want)):
        if not np.array_equal(np_of(y), wy) or not (np_of(x) == -1).all():
            raise SystemExit("%s: writing batch %d's inputs changed its targets" % (name, i))
    l.close()
    print("ok: %s: %d batches kept over two epochs (%d a ring) equal the C loader's" %
          (name, len(kept), kw["buffers"]))

# Batches kept through a part of them only, while the buffers of those let go are reused: a
# row slice of inputs (numpy), or the inputs tensor alone (torch). Then a seek back: the batches
# kept stay, and the loader gives the batches of the new position.
for as_torch in (False, True):
    kw = dict(seed=5, block_bytes=4096, window_blocks=3, buffers=2, as_torch=as_torch)
    B, S = 4, 64
    l = ferry.TokenLoader(data, S, B, **kw)
    n = 3 * int(l.steps_per_epoch) // 2
    want = oracle(B, S, n + 5, kw)
    parts = {}
    for i in range(n):
        x, y = l.next_batch()
        if i % 3 == 0:
            parts[i] = x if as_torch else x[1:3]  # the rest of the batch is dropped
        del x, y
        if i % 7 == 0:
            gc.collect()
    for i, part in parts.items():
        wx = want[i][2] if as_torch else want[i][2][1:3]
        if not np.array_equal(np_of(part), wx):
            raise SystemExit("as_torch=%s: batch %d kept as a part was overwritten" %
                             (as_torch, i))
    state = {"epoch": 0, "sample": 0}
    kept = [l.next_batch() for _ in range(5)]  # batches n .. n + 4
    l.load_state_dict(state)
    again = [l.next_batch() for _ in range(5)]  # batches 0 .. 4
    check("as_torch=%s: kept across a seek" % as_torch, kept, want[n:])
    check("as_torch=%s: after the seek" % as_torch, again, want[:5])
    l.close()
    print("ok: as_torch=%s: %d batches kept as a part while the rest were reused, and "
          "across a seek" % (as_torch, len(parts)))
PY
rc=$?
[ $rc = 124 ] && fail "a loader whose caller keeps its batches hung (killed after 300 s)"
[ $rc = 0 ] || fail "see above"
pass "batches kept past the ring stay the C loader's, bit for bit"
