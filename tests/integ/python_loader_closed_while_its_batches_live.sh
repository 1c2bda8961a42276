#!/usr/bin/env bash
# Batches lent by the default TokenLoader are their holders', not the C loader's: after close()
# (and after a loader dropped unclosed), the batches still held read as the C loader's
# (loader-dump, the oracle), can be written, and are freed as they die, once each. Buffers of
# 256 KiB, which malloc maps on their own, so a batch left in freed memory would fault even
# without the sanitizer. Arrays let go on other threads while the loader closes (100 trials)
# and a process that exits with its loader open and batches alive end cleanly too. A copy of a
# batch's buffer (copy.copy of the ctypes array under it) is its own, never taken in.
. "$(dirname "$0")/python_lib.sh"
need_python torch

cat >"$T/data.py" <<'PY'
import sys, numpy as np, pyhelp
T = sys.argv[1]
rng = np.random.default_rng(2)
for i, n in enumerate([300000, 200000]):
    pyhelp.llmc("%s/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
PY
"$PY" "$T/data.py" "$T" || fail "cannot write the shards"

timeout 300 "$PY" - "$T" <<'PY' || fail "see above"
import gc, os, sys, threading, numpy as np, torch, ferry, pyhelp
T = sys.argv[1]
build = os.environ["FERRY_BUILD"]
data = T + "/s_*.bin"
B, S = 64, 512  # 2 x 128 KiB a batch
want = pyhelp.c_dump(build, T + "/c.dump", data, B, S, 12,
                     ["--seed", 4, "--shuffle", "--buffers", 2])

def np_of(a):
    return a.numpy() if isinstance(a, torch.Tensor) else a

for as_torch, close in ((False, True), (True, True), (False, False), (True, False)):
    l = ferry.TokenLoader(data, S, B, seed=4, buffers=2, as_torch=as_torch)
    held = [l.next_batch() for _ in range(6)]  # more than the ring's 2 buffers
    x, y = l.next_batch()
    del x, y  # its buffer goes back to the loader's spares
    gc.collect()
    if close:
        l.close()
    del l
    gc.collect()
    for i, (x, y) in enumerate(held):
        if not np.array_equal(np_of(x), want[i][2]) or not np.array_equal(np_of(y), want[i][3]):
            raise SystemExit("as_torch=%s close=%s: batch %d changed once the loader was gone"
                             % (as_torch, close, i))
        x[0, 0] = 12345  # still the holder's to write
    del held[::2]
    gc.collect()
    rest = sum(int(np_of(x).sum()) + int(np_of(y).sum()) for x, y in held)
    del held
    gc.collect()
    print("ok: as_torch=%s, %s: batches read, written and freed after the loader (%d)" %
          (as_torch, "closed" if close else "dropped unclosed", rest != 0))

# Arrays dying on other threads while the main thread closes the loader: each buffer goes
# back to the spares or is freed, once, never both.
for trial in range(100):
    l = ferry.TokenLoader(data, 16, 4, seed=trial, block_bytes=4096, buffers=2)
    held = [l.next_batch() for _ in range(8)]
    go = threading.Event()

    def drop(part):
        go.wait()
        part.clear()
        gc.collect()

    threads = [threading.Thread(target=drop, args=(held[k::2],)) for k in (0, 1)]
    del held
    for t in threads:
        t.start()
    go.set()
    l.close()
    for t in threads:
        t.join(30)
        if t.is_alive():
            raise SystemExit("trial %d: a thread dropping batches hung" % trial)
print("ok: 100 closes racing batches dropped on two threads")

# A copy of the ctypes array a batch lies on (its base's base) owns ctypes' memory, not a lent
# buffer: dropping it must give the loader nothing. Before the fix its address went to the
# spares, the readers filled freed memory and the loader freed it again (glibc aborted with
# "double free or corruption"; the sanitizer saw a heap-use-after-free).
# ferry._fast's base (x.base, a ferry._fast.Lent) cannot be copied at all.
import copy
l = ferry.TokenLoader(data, 64, 8, seed=3, block_bytes=4096, buffers=2)
ref = ferry.TokenLoader(data, 64, 8, seed=3, block_bytes=4096, buffers=2, lent=False)
for i in range(20):
    x, y = l.next_batch()
    wx, wy = ref.next_batch()
    if l._lender is not None:
        try:
            copy.copy(x.base)
        except TypeError:
            pass
        else:
            raise SystemExit("ferry._fast: a batch's base was copied")
        c = np.stack([x.copy(), y.copy()])
    else:
        c = np.frombuffer(copy.copy(x.base.base), dtype=np.int32).reshape(2, 8, 64)
    if not np.array_equal(c[0], wx) or not np.array_equal(c[1], wy):
        raise SystemExit("a copy of batch %d's buffer is not the batch" % i)
    del x, y, c
    gc.collect()
    junk = [np.full(2 * 8 * 64, -1, np.int32) for _ in range(4)]  # reuses what was freed
kept = [(l.next_batch(), ref.next_batch()) for _ in range(200)]
for i, ((x, y), (wx, wy)) in enumerate(kept):
    if not np.array_equal(x, wx) or not np.array_equal(y, wy):
        raise SystemExit("batch %d after copies of buffers were dropped is not the C loader's"
                         % (20 + i))
l.close()
ref.close()
del kept
gc.collect()
print("ok: copies of a batch's buffer are their own, the loader never takes them in")
PY

# A process that ends with its loader open and batches alive: the finalizers run (or not) at
# interpreter exit, in whatever order, and the process exits 0.
timeout 120 "$PY" -c "
import ferry
l = ferry.TokenLoader('$T/s_*.bin', 512, 64, seed=4, buffers=2)
kept = [l.next_batch() for _ in range(5)]
x, y = l.next_batch()
print('ok: exiting with the loader open and', len(kept) + 1, 'batches alive')" ||
	fail "exit with a loader and its batches alive: status $?"
pass "batches outlive their loader, closed or not, and are freed once"
