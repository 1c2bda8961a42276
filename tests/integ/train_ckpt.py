# The optimizer state of a ferry train checkpoint for the train_* tests, in either format
# (train/ckpt.c): the whole state file (a header, the settings, m, v, an 8-byte checksum) or
# a sharded one (manifest_%08d.txt, one shard_%08d_%05d.bin per writing rank: a 48-byte header,
# m and v of the rank's slice). moments(dir, step, n) gives m then v, n floats each.
# worst(diffs) is the largest of a comparison's differences, for a check against a tolerance.
import numpy as np, os, re

# A NaN (a step gone wrong: the trainer's guard skips its update but logs its loss) counts as
# infinitely far: the builtin max() passes over a NaN unless it comes first (nan > x and x > nan
# are both False), so a run whose loss turned NaN at step 2 would pass `max(...) <= tol`.
def worst(diffs):
    return max(d if d == d else float("inf") for d in diffs)

def moments(d, step, n):
    state = f"{d}/state_{step:08d}.bin"
    if os.path.exists(state):
        b = open(state, "rb").read()
        return np.frombuffer(b[len(b) - 8 - 8 * n:len(b) - 8], dtype=np.float32)
    text = open(f"{d}/manifest_{step:08d}.txt").read()
    m, v = [], []
    for r, lo, hi in re.findall(r"^shard (\d+) (\d+) (\d+) ", text, re.M):
        k = int(hi) - int(lo)
        a = np.fromfile(f"{d}/shard_{step:08d}_{int(r):05d}.bin", dtype=np.float32)[12:]
        m.append(a[:k]); v.append(a[k:])
    out = np.concatenate(m + v)
    assert out.size == 2 * n, f"{d} step {step}: {out.size} moments, want {2 * n}"
    return out
