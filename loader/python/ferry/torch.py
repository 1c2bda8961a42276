"""ferry's loader as a torch IterableDataset: each DataLoader worker of each rank opens its own C
loader on its share of the global order, so that a rank's DataLoader yields exactly the batches
`ferry train` gives that rank, and all workers of all ranks together take each sample of an
epoch once. See docs/python.md ("Workers and ranks").

    ds = ferry.torch.TokenDataset(paths, seq_len=1024, batch=8, rank=r, world=w)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for inputs, targets in dl:      # (8, 1024) int32 tensors
            ...
"""
import os

import torch
import torch.utils.data

from . import TokenLoader, _check_dataset


def _default_rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class TokenDataset(torch.utils.data.IterableDataset):
    """One epoch of this rank's batches per iteration, as (inputs, targets) int32 tensors of
    (batch, seq_len); use it with DataLoader(batch_size=None). The arguments are
    TokenLoader's; rank and world default to torch.distributed's, else to the RANK and
    WORLD_SIZE variables, else 0 and 1.

    Worker i of N on rank r opens the C loader as rank ((n + i) mod N) * world + r of
    N * world, at position (n + i) // N, where n is the rank's batch to start from
    (load_state_dict): DataLoader asks its workers in turn, so its k-th batch is the rank's
    batch n + k of the global order. The epoch's samples are then cut at a multiple of
    global_batch, which must be a multiple of batch * world * N (default: exactly that);
    with ferry train's global batch (--total-batch-tokens / seq_len), N must divide the
    micro-batches a step accumulates, and the epochs are ferry train's. Call set_epoch before
    each epoch (persistent_workers would keep the workers' copies of the epoch: leave it
    off; a persistent worker's second iteration raises)."""

    def __init__(self, paths, seq_len, batch, seed=1, rank=None, world=None, *, shuffle=True,
                 global_batch=0, format="auto", block_bytes=0, window_blocks=0, buffers=0):
        super().__init__()
        if rank is None or world is None:
            r, w = _default_rank_world()
            rank = r if rank is None else rank
            world = w if world is None else world
        self.paths, self.seq_len, self.batch, self.seed = paths, seq_len, batch, seed
        self.rank, self.world = rank, world
        self.kw = dict(shuffle=shuffle, format=format, block_bytes=block_bytes,
                       window_blocks=window_blocks, buffers=buffers)
        self.global_batch = global_batch  # 0: batch * world * workers
        self.epoch, self.start = 0, 0
        self._state_gb = 0  # a loaded state's global_batch, checked where the workers know theirs
        self._iterated_in = 0  # the DataLoader worker (pid) that iterated this copy already
        # Opened here once, and closed, so that bad arguments and bad shards raise at once
        # in the caller's process, with the C reason, not in a worker.
        with TokenLoader(paths, seq_len, batch, seed, rank, world,
                         global_batch=global_batch, **self.kw) as probe:
            self.vocab_size = probe.vocab_size
            self.dataset = probe.dataset  # the fingerprint state_dict carries
            self.kw["block_bytes"], self.kw["window_blocks"] = (probe.block_bytes,
                                                                probe.window_blocks)

    def set_epoch(self, epoch):
        """The next iteration is epoch `epoch`, from its start."""
        self.epoch, self.start = int(epoch), 0

    def state_dict(self, batches_seen):
        """The position after this rank has taken batches_seen batches of the current
        iteration, in TokenLoader.state_dict's (and ferry train's checkpoint's) terms. After
        the whole epoch it is the epoch's end, which TokenLoader.load_state_dict takes as the
        next epoch's start."""
        n = self.start + int(batches_seen)
        # global_batch as given: 0 is the default, batch x world x the DataLoader's workers,
        # which only the workers know; a TokenLoader refuses it (it needs the number).
        return {"epoch": self.epoch, "sample": n * self.batch * self.world,
                "seed": self.seed, "shuffle": self.kw["shuffle"],
                "global_batch": self.global_batch, "block_bytes": self.kw["block_bytes"],
                "window_blocks": self.kw["window_blocks"], "dataset": dict(self.dataset)}

    def load_state_dict(self, state):
        """The next iteration starts at a state_dict's position (TokenLoader's, or this
        class's): the rest of that epoch only."""
        for k in ("seed", "shuffle", "block_bytes", "window_blocks"):
            mine = self.seed if k == "seed" else self.kw[k]
            if k in state and state[k] != mine:
                raise ValueError("state_dict: %s %s, this dataset's is %s: another order" %
                                 (k, state[k], mine))
        _check_dataset(state, self.dataset, "dataset")
        gb = state.get("global_batch", 0)
        if gb and self.global_batch and gb != self.global_batch:
            raise ValueError("state_dict: global_batch %s, this dataset's is %s: another order" %
                             (gb, self.global_batch))
        if gb == 0 and self.global_batch and "global_batch" in state:
            raise ValueError("state_dict: global_batch 0 (the default, batch x world x "
                             "workers), this dataset's is %d: another order" % self.global_batch)
        micro = self.batch * self.world
        if state["sample"] % micro:
            raise ValueError("state_dict: epoch %d sample %d is not a multiple of "
                             "batch*world = %d" % (state["epoch"], state["sample"], micro))
        self.epoch, self.start = int(state["epoch"]), int(state["sample"]) // micro
        self._state_gb = gb

    def _share(self):
        """This worker's C loader arguments and first position."""
        info = torch.utils.data.get_worker_info()
        n_workers, i = (info.num_workers, info.id) if info else (1, 0)
        micro = self.batch * self.world * n_workers
        gb = self.global_batch or micro
        if gb % micro:
            raise ValueError(
                "global_batch %d is not a multiple of batch %d x world %d x %d DataLoader "
                "workers: the workers' loaders could not end the epoch where ferry train "
                "does" % (gb, self.batch, self.world, n_workers))
        if self._state_gb and self._state_gb != gb:
            # This dataset's global_batch is the default: the state's must be what it is
            # with this many workers.
            raise ValueError("state_dict: global_batch %d, this dataset's is %d (batch %d x "
                             "world %d x %d DataLoader workers): another order" %
                             (self._state_gb, gb, self.batch, self.world, n_workers))
        k = self.start + i
        return (k % n_workers) * self.world + self.rank, self.world * n_workers, gb, \
            k // n_workers

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            # A worker iterates its own copy of the dataset, made when it started. Only a
            # persistent worker (persistent_workers=True) iterates it again, and set_epoch and
            # load_state_dict in the main process never reach that copy: it would silently
            # give the epoch it started with once more.
            if self._iterated_in == os.getpid():
                raise RuntimeError("TokenDataset: a persistent DataLoader worker does not see "
                                   "set_epoch or load_state_dict, so it would repeat its "
                                   "first epoch: leave persistent_workers off")
            self._iterated_in = os.getpid()
        vrank, vworld, gb, first = self._share()
        loader = TokenLoader(self.paths, self.seq_len, self.batch, self.seed, vrank, vworld,
                             global_batch=gb, as_torch=True, **self.kw)
        try:
            if first >= loader.steps_per_epoch:
                return
            loader.load_state_dict({"epoch": self.epoch,
                                    "sample": first * self.batch * vworld})
            yield from loader
        finally:
            loader.close()
