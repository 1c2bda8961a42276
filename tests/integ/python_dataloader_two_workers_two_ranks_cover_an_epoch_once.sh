#!/usr/bin/env bash
# ferry.torch.TokenDataset under torch's DataLoader with 2 workers on each of 2 ranks: every
# sample of an epoch comes out exactly once over the 4 streams, and each rank's DataLoader
# yields exactly the C loader's batches for that rank (loader-dump --rank R --world 2, the order
# ferry train gives that rank), in order; also for the next epoch, after a resume at an odd
# batch (the workers' turns shift), and with a tail of samples that no global batch takes (it
# is dropped as ferry train drops it: the samples taken are the epoch's first used ones, each
# once). Each token of these u32 shards is its own index, so a row names its sample. Persistent
# workers, which set_epoch cannot reach, refuse a second iteration instead of repeating epoch 0.
. "$(dirname "$0")/python_lib.sh"
need_python torch

"$PY" - "$T" <<'PY' || fail "see above"
import os, sys, numpy as np, torch, pyhelp
from torch.utils.data import DataLoader
import ferry, ferry.torch
T = sys.argv[1]
build = os.environ["FERRY_BUILD"]
S, B, W, N = 16, 3, 2, 2
G = B * W * N
os.makedirs(T + "/even"); os.makedirs(T + "/odd")
def shards(d, samples):
    base = 0
    for i, k in enumerate(samples):
        n = k * S + 1  # k samples of S+1 tokens, one token shared between neighbours
        pyhelp.llmc("%s/s_%d.bin" % (d, i), np.arange(base, base + n), u32=True)
        base += n
shards(T + "/even", [100, 44, 36])  # 180 samples: 15 global batches of 12
shards(T + "/odd", [100, 44, 41])   # 185: 5 left over
kw = dict(block_bytes=S * 4 * 5, window_blocks=3)

def sample_ids(x):
    """The samples of a batch's rows: the first token of row j is its sample's first token."""
    return [int(v) for v in x[:, 0]]

def rank_stream(ds):
    out = []
    for x, y in DataLoader(ds, batch_size=None, num_workers=N):
        if not isinstance(x, torch.Tensor) or x.shape != (B, S) or x.dtype != torch.int32:
            raise SystemExit("a batch is no (B, S) int32 tensor: %r" % (x,))
        if not torch.equal(x[:, 1:], y[:, :-1]):
            raise SystemExit("targets are not inputs shifted by one")
        out.append((x.numpy(), y.numpy()))
    return out

def c_rank(data, rank, epoch, position, steps):
    return pyhelp.c_dump(build, T + "/c.dump", data, B, S, steps,
                         ["--rank", rank, "--world", W, "--seed", 4, "--shuffle",
                          "--global-batch", G, "--block-bytes", kw["block_bytes"],
                          "--window-blocks", kw["window_blocks"], "--epoch", epoch,
                          "--position", position])

def check(data, epoch, start, nr_samples):
    streams = []
    for r in range(W):
        ds = ferry.torch.TokenDataset(data, S, B, seed=4, rank=r, world=W, **kw)
        ds.set_epoch(epoch)
        if start:
            ds.load_state_dict({"epoch": epoch, "sample": start * B * W})
        got = rank_stream(ds)
        used = nr_samples // G * G
        steps = used // (B * W)
        if len(got) != steps - start:
            raise SystemExit("rank %d: %d batches, want %d" % (r, len(got), steps - start))
        want = c_rank(data, r, epoch, start, steps - start)
        for i, ((x, y), (e, p, cx, cy)) in enumerate(zip(got, want)):
            if e != epoch or p != start + i or not np.array_equal(x, cx) or \
                    not np.array_equal(y, cy):
                raise SystemExit("rank %d epoch %d: DataLoader batch %d is not the C loader's "
                                 "batch %d/%d" % (r, epoch, i, e, p))
        streams.append(got)
    return streams

def ids_of(streams):
    return [i for s in streams for x, _ in s for i in sample_ids(x)]

def starts(d, samples):
    out, base = [], 0
    for k in samples:
        out += [base + j * S for j in range(k)]
        base += k * S + 1
    return out

for epoch in (0, 1):
    ids = ids_of(check(T + "/even/*.bin", epoch, 0, 180))
    every = starts(T + "/even", [100, 44, 36])
    if sorted(ids) != sorted(every):
        dup = len(ids) - len(set(ids))
        raise SystemExit("epoch %d: %d samples taken (%d twice), %d missing" %
                         (epoch, len(ids), dup, len(set(every) - set(ids))))
    print("ok: epoch %d: 2 ranks x 2 workers took each of the 180 samples once, each rank "
          "in its C loader's order" % epoch)

# A resume at batch 3 (odd: worker 0 now serves the rank's batches 3, 5, ...): the rest of the
# epoch, and with the first 3 batches of each rank every sample once.
head = [[x for x, _ in s[:3]] for s in check(T + "/even/*.bin", 0, 0, 180)]
rest = check(T + "/even/*.bin", 0, 3, 180)
ids = [i for h in head for x in h for i in sample_ids(x)] + ids_of(rest)
if sorted(ids) != sorted(starts(T + "/even", [100, 44, 36])):
    raise SystemExit("resumed at batch 3: the epoch's samples are not each taken once")
print("ok: resumed at batch 3: the rest of the epoch, every sample once")

# 185 samples: 180 taken (15 global batches), each once: the first 180 of the epoch's order,
# which the C loader on one rank with the whole global batch lists.
ids = ids_of(check(T + "/odd/*.bin", 0, 0, 185))
one = pyhelp.c_dump(build, T + "/c.dump", T + "/odd/*.bin", G, S, 15,
                    ["--seed", 4, "--shuffle", "--block-bytes", kw["block_bytes"],
                     "--window-blocks", kw["window_blocks"]])
want = [i for _, _, x, _ in one for i in sample_ids(x)]
if len(set(ids)) != len(ids) or sorted(ids) != sorted(want):
    raise SystemExit("185 samples: taken %d (%d distinct), not the order's first 180" %
                     (len(ids), len(set(ids))))
print("ok: 185 samples: the order's first 180 taken once, 5 left over as ferry train leaves them")

# A global batch the workers cannot split: refused with one line.
ds = ferry.torch.TokenDataset(T + "/even/*.bin", S, B, seed=4, rank=0, world=W,
                              global_batch=B * W * 3, **kw)
try:
    rank_stream(ds)
except ValueError as e:
    if "is not a multiple of batch 3 x world 2 x 2 DataLoader workers" not in str(e):
        raise SystemExit("the refusal said: %s" % e)
else:
    raise SystemExit("global batch 18 was split over 2 workers")
print("ok: a global batch of 18 is refused for 2 ranks x 2 workers of batch 3")

# A dataset's state carries its global_batch and the dataset's fingerprint; another global
# batch, or other files, are refused with one line (at load_state_dict, or where the workers
# learn their default global batch: batch x world x workers).
def refused(f, why):
    try:
        f()
    except ValueError as e:
        if why not in str(e):
            raise SystemExit("the refusal said %r, want %r" % (str(e), why))
        return
    raise SystemExit("a state with %s was taken" % why)

d12 = ferry.torch.TokenDataset(T + "/even/*.bin", S, B, seed=4, rank=0, world=W,
                               global_batch=G, **kw)
st = d12.state_dict(3)
if st.get("global_batch") != G or "dataset" not in st:
    raise SystemExit("TokenDataset.state_dict lacks global_batch or dataset: %s" % st)
d24 = ferry.torch.TokenDataset(T + "/even/*.bin", S, B, seed=4, rank=0, world=W,
                               global_batch=2 * G, **kw)
refused(lambda: d24.load_state_dict(st), "state_dict: global_batch 12, this dataset's is 24")
odd = ferry.torch.TokenDataset(T + "/odd/*.bin", S, B, seed=4, rank=0, world=W, **kw)
refused(lambda: odd.load_state_dict(st), "another dataset")
dflt = ferry.torch.TokenDataset(T + "/even/*.bin", S, B, seed=4, rank=0, world=W, **kw)
one = ferry.TokenLoader(T + "/even/*.bin", S, B, seed=4, rank=0, world=W, **kw)
one.next_batch()
dflt.load_state_dict(one.state_dict())  # global_batch 6: only 1 worker would cut there
refused(lambda: rank_stream(dflt), "state_dict: global_batch 6, this dataset's is 12")
print("ok: a state of another global batch or dataset is refused")

# persistent_workers=True: the workers keep the copy of the dataset they started with, which
# set_epoch never reaches. The first epoch is the rank's; the second iteration raises instead
# of giving epoch 0 once more (before the fix it did, silently).
ds = ferry.torch.TokenDataset(T + "/even/*.bin", S, B, seed=4, rank=0, world=W, **kw)
dl = DataLoader(ds, batch_size=None, num_workers=N, persistent_workers=True)
first = [x.numpy().copy() for x, _ in dl]
want = c_rank(T + "/even/*.bin", 0, 0, 0, len(first))
if len(first) != 30 or any(not np.array_equal(x, cx) for x, (_, _, cx, _) in zip(first, want)):
    raise SystemExit("persistent workers: the first epoch is not the rank's")
ds.set_epoch(1)
try:
    again = [x for x, _ in dl]
except RuntimeError as e:
    if "leave persistent_workers off" not in str(e):
        raise SystemExit("persistent workers: the refusal said %s" % e)
else:
    raise SystemExit("persistent workers: set_epoch(1) gave %d batches%s" %
                     (len(again), ", epoch 0's again" if len(again) == len(first) and
                      all(np.array_equal(a.numpy(), b) for a, b in zip(again, first)) else ""))
del dl
print("ok: persistent workers: the first epoch, then a second iteration refused in one line")
PY
pass "2 DataLoader workers x 2 ranks take every sample of an epoch once, in ferry train's order"
