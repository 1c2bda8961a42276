"""ferry's token loader from Python: the C loader of `ferry train` (libferry_loader.so, through
ctypes), yielding numpy arrays (or torch tensors) in exactly the order `ferry train` trains on
for the same data, seed, batch, seq_len, rank and world. See docs/python.md.

    import ferry
    loader = ferry.TokenLoader("/mnt/data/train_*.bin", seq_len=1024, batch=8, seed=1)
    for inputs, targets in loader:      # one epoch, from where the loader stands
        ...                             # (8, 1024) int32 arrays
    state = loader.state_dict()         # exact resume, mid-epoch too
"""
import ctypes
import hashlib
import operator
import os
import threading
import weakref

import numpy as np

from . import _lib

__all__ = ["TokenLoader", "FORMATS"]
__version__ = "0.1.0"

FORMATS = ("auto", "llmc", "raw-u16", "raw-u32", "megatron")
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)


def _int(name, v):
    """v as a Python int for a C int64 argument: TypeError for a non-integer; a value past
    int64 is clamped so that the C side refuses it by name with its range."""
    if isinstance(v, bool):
        raise TypeError("%s: want an integer, got a bool" % name)
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError("%s: want an integer, got %s" % (name, type(v).__name__)) from None
    return max(_I64_MIN, min(_I64_MAX, v))


_XATTR_ETAG = "user.ferry.etag"  # fs/ferry_ctl.h: the remote object's version on a ferry mount


def _dataset(h, seq_len):
    """What the order depends on besides the settings, as ferry train's ranks compare it
    (train/agree.c): the shards the C loader opened, in its order (their names, sizes and
    versions: a ferry mount's ETag, else the mtime to the nanosecond), and seq_len. Names
    without their directory, so that a dataset moved or mounted elsewhere resumes."""
    names, versions, n, size = hashlib.sha256(), hashlib.sha256(), 0, 0
    path, idx = ctypes.c_char_p(), ctypes.c_char_p()
    i = 0
    while _lib.lib.ferry_py_shard_files(h, i, ctypes.byref(path), ctypes.byref(idx)) == 0:
        i += 1
        for f in (path.value, idx.value):
            if f is None:
                continue
            st = os.stat(f)
            names.update(os.path.basename(f) + b"\0")
            try:
                versions.update(b"etag:" + os.getxattr(f, _XATTR_ETAG) + b"\0")
            except OSError:
                versions.update(b"mtime:%d\0" % st.st_mtime_ns)
            n, size = n + 1, size + st.st_size
    return {"files": n, "bytes": size, "names": names.hexdigest()[:16],
            "versions": versions.hexdigest()[:16], "seq_len": seq_len}


def _check_dataset(state, mine, who):
    """ValueError naming the first difference when state carries a dataset fingerprint that is
    not mine. A state without one (written before the fingerprint, or built by hand from a
    ferry train checkpoint's epoch and sample) is taken unchecked, as any key a state lacks."""
    theirs = state.get("dataset")
    if theirs is None:
        return
    if not isinstance(theirs, dict):
        raise ValueError("state_dict: dataset %r is not a fingerprint (a dict)" % (theirs,))
    for k in ("files", "bytes", "names", "versions", "seq_len"):
        if theirs.get(k) != mine[k]:
            raise ValueError("state_dict: dataset %s %s, this %s's is %s: another dataset" %
                             (k, theirs.get(k), who, mine[k]))


# Bumped in every forked child: a loader made before the fork is not the child's (checked on
# each batch, so a counter, not a getpid system call).
_fork_generation = 0
# The open loaders, whose locks a forked child replaces: a thread of the parent may have held
# one at the fork, and the child has no thread that would ever release it, so close() or a
# call that is to raise "not in this process" would wait forever.
_loaders = weakref.WeakSet()


def _forked():
    global _fork_generation
    _fork_generation += 1
    for loader in list(_loaders):
        loader._lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)


class _Resource:
    """The C loader, freed when the last of its TokenLoader and copy=False views lets go."""

    def __init__(self, h):
        self.h, self.pid, self.generation = h, os.getpid(), _fork_generation
        # Held here: at interpreter exit the module's globals may be gone before this is.
        self._close, self._getpid = _lib.lib.ferry_py_close, os.getpid

    def __del__(self):
        # A forked child has none of the reader threads: joining them would hang.
        if self._getpid() == self.pid:
            self._close(self.h)


class _Pool:
    """One loader's spare batch buffers (C memory of 2 x B x T int32, as addresses), and the
    way back of its lent ones. A lent buffer belongs to the arrays over it; when the last of
    them dies (on whatever thread, whenever the garbage collector gets to it, at interpreter
    exit too) it comes back here, to be the spare a later batch swaps into the ring, or is
    freed once the pool is full or closed. Buffers never depend on the C loader: they are freed
    with free(), whether it is open or not. No lock: a finalizer may run on a thread that holds
    any lock already; list append and pop are atomic."""

    def __init__(self, cap):
        self.spares, self.open, self.cap = [], True, cap
        # Held here: at interpreter exit the module's globals may be gone before this is.
        self._free = _lib.lib.ferry_py_buffer_free

    def put(self, addr):
        if self.open and len(self.spares) < self.cap:
            self.spares.append(addr)
            if not self.open:  # closed meanwhile, perhaps after its drain: drain again
                self.drain()
        else:
            self._free(addr)

    def close(self):
        self.open = False
        self.drain()

    def drain(self):
        spares, free = self.spares, self._free
        while True:
            try:
                addr = spares.pop()
            except IndexError:
                return
            free(addr)


def _load_fast():
    """ferry._fast (python/ferry/_fast.c), the default mode's per-batch work in C, or None: the
    pure-Python path then, the same batches. Beside this file once installed; in a build tree,
    beside FERRY_LIB's library. FERRY_PURE=1 takes the pure path; so does setting ferry._fast
    to None before opening a loader. Whatever goes wrong loading it only costs the speed."""
    if os.environ.get("FERRY_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _fast as fast
        return fast
    except Exception:
        pass
    lib = os.environ.get("FERRY_LIB")
    if not lib:
        return None
    try:
        import importlib.machinery
        import importlib.util
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(os.path.dirname(os.path.abspath(lib)), "_fast" + suffix)
            if os.path.exists(path):
                spec = importlib.util.spec_from_file_location(__name__ + "._fast", path)
                fast = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(fast)
                return fast
    except Exception:
        pass
    return None


_fast = _load_fast()


def _lent_type(tokens, pool):
    """The ctypes array a lent batch's numpy arrays lie on (their base): when it dies, its
    buffer goes back to pool."""
    class _Lent(ctypes.c_int32 * tokens):
        __slots__ = ()

        def __del__(self, put=pool.put, addressof=ctypes.addressof):
            # Only an array over a lent buffer (from_address) gives it back: a copy of one
            # (copy.copy of a batch's base's base) owns memory of its own, ctypes', which the
            # loader must neither fill nor free.
            if not self._b_needsfree_:
                put(addressof(self))
    return _Lent


class TokenLoader:
    """Batches of (batch, seq_len) int32 inputs and targets (inputs shifted by one) from token
    shards (llm.c .bin, raw uint16/uint32, Megatron .bin/.idx), read ahead by the C loader's
    threads; on a ferry mount they are read from the cache file directly, as `ferry train` does.

    paths: one glob, directory or file, as `ferry train --data` (shards sorted by name).
    seq_len, batch: T and B per rank. seed, rank, world: as `ferry train --seed` and its rank
    and number of ranks (default seed 1 is ferry train's). shuffle=False reads in file order
    (ferry train's validation). global_batch: samples per optimizer step over all ranks,
    `--total-batch-tokens / seq_len` (default batch * world); it decides which samples end an
    epoch. block_bytes, window_blocks: `--loader-block-bytes`, `--loader-window-blocks` (0:
    the defaults). buffers: batches read ahead (0: 4). as_torch=True yields torch tensors
    (sharing the arrays' memory) instead of numpy arrays.

    By default (copy=True) each batch is the caller's, to keep and write as long as it likes,
    and costs no copy: the C loader's buffer it was read into is lent out of the ring (a spare
    buffer takes its place), and comes back to be reused when the last array (or tensor, or
    view) over it dies. A caller that keeps more batches than the ring has buffers only makes
    the loader allocate more (what copies would cost); none is ever overwritten, closing the
    loader leaves them alone. lent=False copies each batch into fresh numpy arrays instead
    (the simple twin, the same batches).

    copy=False yields views of the C loader's own buffers instead of fresh arrays: no copy,
    but a batch is valid only until the next one is asked for or load_state_dict() seeks (the
    C loader then reuses its buffer; a seek refills the whole ring), so a loop must be done
    with each batch (or copy it) before taking the next; list(loader) would hold overwritten
    batches. Numpy views are read-only; torch views are
    not, and must not be written. The buffers stay allocated while any view is alive.

    Bad arguments and unreadable or malformed shards raise ValueError (EINVAL) or OSError (its
    errno) with the C loader's one-line reason, at construction."""

    def __init__(self, paths, seq_len, batch, seed=1, rank=0, world=1, *, shuffle=True,
                 global_batch=0, format="auto", block_bytes=0, window_blocks=0, buffers=0,
                 as_torch=False, copy=True, lent=True):
        self._res = None
        self._h = None
        if isinstance(paths, (list, tuple)):
            raise TypeError("paths: one glob, directory or file (as ferry train --data), "
                            "not a %s" % type(paths).__name__)
        paths = os.fsencode(paths)
        if b"\0" in paths:
            raise ValueError("paths: a NUL byte in %r" % os.fsdecode(paths))
        if not isinstance(format, str):
            raise TypeError("format: want one of %s" % ", ".join(FORMATS))
        seed = operator.index(seed)
        if not 0 <= seed < (1 << 64):
            raise ValueError("seed %d: want 0 to %d" % (seed, (1 << 64) - 1))
        args = {k: _int(k, v) for k, v in (
            ("seq_len", seq_len), ("batch", batch), ("rank", rank), ("world", world),
            ("global_batch", global_batch), ("block_bytes", block_bytes),
            ("window_blocks", window_blocks), ("buffers", buffers))}
        if as_torch:
            import torch  # noqa: F401  (ImportError here, not at the first batch)
            self._torch = torch
        self.as_torch, self.copy, self.lent = bool(as_torch), bool(copy), bool(lent)
        h = _lib._H()
        err = ctypes.create_string_buffer(1024)
        rc = _lib.lib.ferry_py_open(
            ctypes.byref(h), paths, format.encode(), args["seq_len"], args["batch"], seed,
            1 if shuffle else 0, args["rank"], args["world"], args["global_batch"],
            args["block_bytes"], args["window_blocks"], args["buffers"], err, len(err))
        if rc < 0:
            raise _lib.error(rc, err.value)
        self._res = _Resource(h)
        self._h = h
        self.paths = os.fsdecode(paths)
        self.seq_len, self.batch = args["seq_len"], args["batch"]
        self.rank, self.world = args["rank"], args["world"]
        self.seed, self.shuffle = seed, bool(shuffle)
        self.format, self.buffers = format, args["buffers"]
        self.global_batch = args["global_batch"] or self.batch * self.world
        bb, wb = ctypes.c_uint32(), ctypes.c_uint32()
        _lib.lib.ferry_py_order(h, ctypes.byref(bb), ctypes.byref(wb))
        self.block_bytes, self.window_blocks = bb.value, wb.value
        self.steps_per_epoch = _lib.lib.ferry_py_steps_per_epoch(h)
        self.vocab_size = _lib.lib.ferry_py_vocab_size(h)
        self.dataset = _dataset(h, self.seq_len)  # at open: the files the order was built from
        self._epoch, self._position = ctypes.c_uint64(), ctypes.c_uint64()
        self._ptrs = (ctypes.c_void_p(), ctypes.c_void_p())
        self._ptr_refs = tuple(ctypes.byref(p) for p in self._ptrs)
        self._epoch_ref = ctypes.byref(self._epoch)
        self._position_ref = ctypes.byref(self._position)
        self._next, self._next_view_fn = _lib.lib.ferry_py_next, _lib.lib.ferry_py_next_view
        self._shape2 = (2, self.batch, self.seq_len)  # inputs, then targets
        self._half_bytes = self.batch * self.seq_len * 4
        self._views = {}  # copy=False: the C buffer's address -> its view, one per ring slot
        # copy=True (lent): the spares, a few more than the ring's buffers (a loop that keeps
        # the last few batches gives them back together), and the lent buffers' array type.
        self._pool = _Pool((self.buffers or 4) + 2)
        self._Lent = _lent_type(2 * self.batch * self.seq_len, self._pool)
        self._buf = ctypes.c_void_p()
        self._buf_ref = ctypes.byref(self._buf)
        self._next_lent_fn, self._buffer_new = _lib.lib.ferry_py_next_lent, \
            _lib.lib.ferry_py_buffer_new
        # ferry._fast's twin of _next_lent, where it loaded: the same C call and pool, in C.
        self._lender = None
        if _fast is not None:
            self._lender = _fast.lender(
                ctypes.cast(self._next_lent_fn, ctypes.c_void_p).value,
                ctypes.cast(h, ctypes.c_void_p).value, self.batch, self.seq_len,
                self._pool.put).next
        # One caller at a time: the C loader hands out a batch's buffers until its next call,
        # so a second thread's call would free them under the first one's copy.
        self._lock = threading.Lock()
        _loaders.add(self)

    # ---- the C handle ----

    def _handle(self):
        """The C handle and its _Resource, which the caller holds across its C call so that a
        close() meanwhile cannot free the loader under it."""
        res = self._res
        if res is None:
            raise ValueError("the loader is closed")
        if self._res.generation != _fork_generation:
            # A forked child has none of the C loader's reader threads.
            raise RuntimeError("this TokenLoader was opened in process %d, not in this one "
                               "(%d): open one in each process (ferry.torch.TokenDataset "
                               "does)" % (res.pid, os.getpid()))
        return res.h, res

    def close(self):
        """Stops the reader threads and frees the buffers (once no copy=False view of them is
        left); the loader is unusable after. Safe from another thread: it waits for a
        next_batch() in flight, whose caller keeps its batch, and the next one raises."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ raised before the lock was made
            self._h, self._res = None, None
            return
        with lock:
            self._h, self._res, self._views = None, None, {}
            self._pool.close()  # lent batches stay their holders'; they are freed as they die

    def __del__(self):
        # Unreachable: no thread is inside a call, and the lock is not to be waited for here.
        self._h, self._res, self._views = None, None, {}
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def read_path(self):
        """How the C loader reads: "ferry-direct" (the cache file of a ferry mount),
        "io_uring" or "pread"."""
        with self._lock:
            h, res = self._handle()
            return _lib.lib.ferry_py_path_name(h).decode()

    # ---- batches ----

    def next_batch(self):
        """The next batch (inputs, targets), crossing into the next epoch by itself, as
        `ferry train` takes them: its micro-batches in step order."""
        # The per-batch path: a few microseconds of Python per call are what separates this
        # from the C consumer at small batches, so no more than it needs (one allocation for
        # both arrays, its address without numpy's .ctypes, prebuilt ctypes arguments).
        if not self.copy:
            return self._next_view()
        if self.lent:
            if self._lender is not None:
                return self._next_fast()
            return self._next_lent()
        out = np.empty(self._shape2, dtype=np.int32)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(out))
        with self._lock:
            # Under the lock: a close() from another thread waits for this call, or went first
            # and this raises; res keeps the C loader alive until the call returns.
            res = self._res
            if res is None or res.generation != _fork_generation:
                self._handle()  # raises
            h = res.h
            rc = self._next(h, addr, addr + self._half_bytes, self._epoch_ref,
                            self._position_ref)
            if rc < 0:
                raise _lib.error(rc, _lib.lib.ferry_py_error(h))
            self.last_epoch, self.last_position = self._epoch.value, self._position.value
        if self.as_torch:
            out = self._torch.from_numpy(out)
        return out[0], out[1]

    def _next_lent(self):
        with self._lock:
            res = self._res
            if res is None or res.generation != _fork_generation:
                self._handle()  # raises
            h = res.h
            # The spare first: running out of memory must not cost a batch.
            try:
                spare = self._pool.spares.pop()
            except IndexError:
                spare = self._buffer_new(h)
                if not spare:
                    raise MemoryError("no memory for another batch of %d x %d tokens" %
                                      (self.batch, self.seq_len))
            rc = self._next_lent_fn(h, spare, self._buf_ref, self._epoch_ref,
                                    self._position_ref)
            if rc < 0:
                self._pool.put(spare)
                raise _lib.error(rc, _lib.lib.ferry_py_error(h))
            # The buffer is this array's (its base) from here: back to the pool as it dies.
            out = np.ndarray(self._shape2, np.int32, self._Lent.from_address(self._buf.value))
            self.last_epoch, self.last_position = self._epoch.value, self._position.value
        if self.as_torch:
            out = self._torch.from_numpy(out)
        return out[0], out[1]

    def _next_fast(self):
        # _next_lent, with ferry._fast doing the C call (the GIL released) and the arrays.
        with self._lock:
            res = self._res
            if res is None or res.generation != _fork_generation:
                self._handle()  # raises
            try:
                spare = self._pool.spares.pop()
            except IndexError:
                spare = self._buffer_new(res.h)
                if not spare:
                    raise MemoryError("no memory for another batch of %d x %d tokens" %
                                      (self.batch, self.seq_len))
            r = self._lender(spare)
            if r.__class__ is int:
                self._pool.put(spare)
                raise _lib.error(r, _lib.lib.ferry_py_error(res.h))
            x, y, self.last_epoch, self.last_position = r
        if self.as_torch:
            return self._torch.from_numpy(x), self._torch.from_numpy(y)
        return x, y

    def _next_view(self):
        a, b = self._ptrs
        with self._lock:
            h, res = self._handle()
            rc = self._next_view_fn(h, self._ptr_refs[0], self._ptr_refs[1], self._epoch_ref,
                                    self._position_ref)
            if rc < 0:
                raise _lib.error(rc, _lib.lib.ferry_py_error(h))
            self.last_epoch, self.last_position = self._epoch.value, self._position.value
            return self._view(a.value, res), self._view(b.value, res)

    def _view(self, addr, res):
        v = self._views.get(addr)
        if v is None:
            n = self.batch * self.seq_len
            mem = (ctypes.c_int32 * n).from_address(addr)
            mem._owner = res  # the C buffers live as long as any view of them
            v = np.frombuffer(mem, dtype=np.int32).reshape(self.batch, self.seq_len)
            if self.as_torch:
                v = self._torch.from_numpy(v)  # writable: torch has no read-only tensors
            else:
                v.flags.writeable = False
            self._views[addr] = v
        return v

    def __iter__(self):
        """The rest of the current epoch, from where the loader stands (all of it when it
        stands at an epoch's start); iterating again goes on with the next epoch."""
        while True:
            batch = self.next_batch()
            yield batch
            if self.last_position + 1 >= self.steps_per_epoch:
                return

    def __len__(self):
        return int(self.steps_per_epoch)

    # ---- where the order stands ----

    @property
    def epoch(self):
        return self.position()[0]

    def position(self):
        """(epoch, position) of the next batch; position counts global micro-batches of
        batch * world samples."""
        e, p = ctypes.c_uint64(), ctypes.c_uint64()
        with self._lock:
            h, res = self._handle()
            _lib.lib.ferry_py_state(h, ctypes.byref(e), ctypes.byref(p))
        return e.value, p.value

    def state_dict(self):
        """Where the next batch stands, in `ferry train`'s checkpoint terms: the epoch and the
        global sample position in its order (position * batch * world), with the settings
        that decide the order and a fingerprint of the dataset ("dataset": its files' names,
        sizes and versions, and seq_len), which load_state_dict checks."""
        e, p = self.position()
        return {"epoch": e, "sample": p * self.batch * self.world, "seed": self.seed,
                "shuffle": self.shuffle, "global_batch": self.global_batch,
                "block_bytes": self.block_bytes, "window_blocks": self.window_blocks,
                "dataset": dict(self.dataset)}

    def load_state_dict(self, state):
        """Seeks to a state_dict's position: the next batch is the one the saving loader would
        have given next, exactly, on the same layout; on another (batch, world) with the same
        order settings, the same point of the global order, as ferry train resumes."""
        self._handle()  # a closed loader raises first
        for k in ("seed", "shuffle", "global_batch", "block_bytes", "window_blocks"):
            if k in state and state[k] != getattr(self, k):
                if k == "global_batch" and state[k] == 0:
                    raise ValueError("state_dict: global_batch 0 (a TokenDataset's default, "
                                     "batch x world x its workers), this loader's is %d: "
                                     "give the dataset its global_batch" % self.global_batch)
                raise ValueError("state_dict: %s %s, this loader's is %s: another order" %
                                 (k, state[k], getattr(self, k)))
        _check_dataset(state, self.dataset, "loader")
        epoch, sample = _int("epoch", state["epoch"]), _int("sample", state["sample"])
        micro = self.batch * self.world
        if epoch < 0 or sample < 0 or sample % micro:
            raise ValueError("state_dict: epoch %d sample %d is not a multiple of "
                             "batch*world = %d" % (epoch, sample, micro))
        position = sample // micro
        if position == self.steps_per_epoch:
            epoch, position = epoch + 1, 0  # an epoch's end is the next one's start
        with self._lock:
            h, res = self._handle()
            rc = _lib.lib.ferry_py_seek(h, epoch, position)
            if rc < 0:
                raise _lib.error(rc, _lib.lib.ferry_py_error(h))
