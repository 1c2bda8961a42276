#!/usr/bin/env bash
# A TokenLoader resumed from state_dict() mid-epoch gives exactly the batches an uninterrupted
# one gives next: on the same layout (several cut points, one just before an epoch's end, one in
# the second epoch, one at an epoch's end), as the C loader seeked to the same point gives them
# (loader-dump --epoch --position, the oracle), and on another layout (2 ranks of B resumed as 1
# rank of 2B, as ferry train resumes a checkpoint on another number of ranks). A state of
# another order, or one that is no multiple of batch x world, is refused with one line.
. "$(dirname "$0")/python_lib.sh"

"$PY" - "$T" <<'PY' || fail "see above"
import pickle, sys, numpy as np, ferry, pyhelp
T = sys.argv[1]
build = __import__("os").environ["FERRY_BUILD"]
rng = np.random.default_rng(5)
for i, n in enumerate([30011, 17000, 9]):
    pyhelp.llmc("%s/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
data = T + "/s_*.bin"
kw = dict(seed=21, block_bytes=6000, window_blocks=3, global_batch=24)

def take(l, n):
    out = []
    for _ in range(n):
        x, y = l.next_batch()
        out.append((l.last_epoch, l.last_position, x, y))
    return out

def same(a, b, what):
    if len(a) != len(b):
        raise SystemExit("%s: %d batches, want %d" % (what, len(a), len(b)))
    for i, (u, v) in enumerate(zip(a, b)):
        if u[:2] != v[:2] or not np.array_equal(u[2], v[2]) or not np.array_equal(u[3], v[3]):
            raise SystemExit("%s: batch %d at %s differs from %s" % (what, i, u[:2], v[:2]))

B, S = 4, 48
ref = ferry.TokenLoader(data, S, B, rank=1, world=3, **kw)
spe = int(ref.steps_per_epoch)
total = 2 * spe + 5
straight = take(ref, total)
for cut in (1, 7, spe // 2, spe - 1, spe, spe + 3):
    a = ferry.TokenLoader(data, S, B, rank=1, world=3, **kw)
    first = take(a, cut)
    state = pickle.loads(pickle.dumps(a.state_dict()))  # as a checkpoint would keep it
    a.close()
    b = ferry.TokenLoader(data, S, B, rank=1, world=3, **kw)
    b.next_batch()  # stand somewhere else first: the seek must move it
    b.load_state_dict(state)
    same(first + take(b, total - cut), straight, "resumed after %d batches" % cut)
    # The C loader seeked to that (epoch, position) gives the same batches.
    e, p = state["epoch"], state["sample"] // (B * 3)
    want = pyhelp.c_dump(build, T + "/c.dump", data, B, S, 10,
                         ["--rank", 1, "--world", 3, "--seed", 21, "--shuffle",
                          "--block-bytes", 6000, "--window-blocks", 3, "--global-batch", 24,
                          "--epoch", e, "--position", p])
    same([(w[0], w[1], w[2], w[3]) for w in want], straight[cut:cut + 10],
         "C loader seeked to %d/%d" % (e, p))
    print("ok: resumed after %d of %d batches an epoch (state %s/%s): exact" %
          (cut, spe, state["epoch"], state["sample"]))

# Another layout: ranks 0 and 1 of 2 at batch 4 -> one rank at batch 8, mid-epoch.
two = [ferry.TokenLoader(data, S, 4, rank=r, world=2, **kw) for r in (0, 1)]
for l in two:
    take(l, 9)
state = two[0].state_dict()
if state != two[1].state_dict():
    raise SystemExit("two ranks disagree on the state: %s %s" % (state, two[1].state_dict()))
one = ferry.TokenLoader(data, S, 8, **kw)
one.load_state_dict(state)
nxt = [take(l, 6) for l in two]
for i, (e, p, x, y) in enumerate(take(one, 6)):
    if not np.array_equal(x, np.concatenate([nxt[0][i][2], nxt[1][i][2]])) or \
            not np.array_equal(y, np.concatenate([nxt[0][i][3], nxt[1][i][3]])):
        raise SystemExit("1 rank of 8 resumed from 2 ranks of 4: batch %d differs" % i)
print("ok: 2 ranks of batch 4 resume as 1 rank of batch 8 at sample %d" % state["sample"])

# Refusals, each one line.
for bad, why in ((dict(state, seed=22), "seed 22, this loader's is 21"),
                 (dict(state, block_bytes=4096), "block_bytes 4096"),
                 (dict(state, sample=state["sample"] + 4), "not a multiple of batch*world = 8")):
    try:
        one.load_state_dict(bad)
    except ValueError as e:
        if why not in str(e) or "\n" in str(e):
            raise SystemExit("refusal said %r, want %r" % (str(e), why))
    else:
        raise SystemExit("a state with %s was taken" % why)
try:
    one.load_state_dict(dict(state, sample=10**6 * 8))
except ValueError as e:
    print("ok: a position past the epoch: %s" % e)
else:
    raise SystemExit("a position past the epoch was taken")
print("ok: states of another order are refused")

# Another dataset: the state carries a fingerprint of the files the order was built from (their
# names, sizes and versions, and seq_len), and a loader over other data refuses it in one line,
# same seed and settings or not.
import os, shutil
def refused(loader, st, why):
    try:
        loader.load_state_dict(st)
    except ValueError as e:
        if why not in str(e) or "\n" in str(e) or "another dataset" not in str(e):
            raise SystemExit("refusal said %r, want %r" % (str(e), why))
        return str(e)
    raise SystemExit("a state of another dataset (%s) was taken" % why)

pyhelp.llmc(T + "/o_0.bin", rng.integers(0, 65535, 47020), vocab=65535)
print("ok: another file: " + refused(ferry.TokenLoader(T + "/o_*.bin", S, 8, **kw), state,
                                     "dataset files 3, this loader's is 1"))
os.makedirs(T + "/rewritten")
for i, n in enumerate([30011, 17000, 9]):  # the same names and sizes, other tokens
    pyhelp.llmc("%s/rewritten/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
print("ok: rewritten files: " + refused(
    ferry.TokenLoader(T + "/rewritten/s_*.bin", S, 8, **kw), state, "dataset versions"))
print("ok: another seq_len: " + refused(ferry.TokenLoader(data, 32, 8, **kw), state,
                                        "dataset seq_len 48, this loader's is 32"))
# The same files moved elsewhere (names, sizes and mtimes kept) are the same dataset.
os.makedirs(T + "/moved")
for i in range(3):
    shutil.copy2("%s/s_%d.bin" % (T, i), "%s/moved/s_%d.bin" % (T, i))
moved = ferry.TokenLoader(T + "/moved/s_*.bin", S, 8, **kw)
moved.load_state_dict(state)
# A state without the fingerprint (older, or epoch and sample of a ferry train checkpoint) is
# taken unchecked, as any key a state lacks.
old = ferry.TokenLoader(data, S, 8, **kw)
old.load_state_dict({k: v for k, v in state.items() if k != "dataset"})
ref8 = ferry.TokenLoader(data, S, 8, **kw)
ref8.load_state_dict(state)
want = take(ref8, 3)
same(take(moved, 3), want, "the dataset moved elsewhere")
same(take(old, 3), want, "a state without its dataset")
print("ok: another dataset's state is refused; the same files moved, and an old state, resume")
PY
pass "a resume from state_dict is exact, mid-epoch and on another layout"
