#!/usr/bin/env bash
# Bad arguments and bad shards raise a Python exception carrying the C loader's one-line reason:
# for each case the exception's text is the very line loader-dump (the C tools) prints after
# "loader-dump: " for the same arguments; EINVAL cases are ValueError, the others OSError with
# the C errno (FileNotFoundError for a missing shard). Values the C config cannot hold
# (negative, past 32 bits), an unknown format, a non-integer and a shard that goes bad while
# the loader reads also raise, with one line each; nothing hangs or crashes. A forked child is
# refused the loader, even when forked while another thread was inside next_batch.
. "$(dirname "$0")/python_lib.sh"

"$PY" - "$T" <<'PY' || fail "see above"
import errno, os, subprocess, sys, numpy as np, ferry, pyhelp
T = sys.argv[1]
build = os.environ["FERRY_BUILD"]
rng = np.random.default_rng(1)
for i, n in enumerate([5000, 3000]):
    pyhelp.llmc("%s/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
pyhelp.llmc(T + "/w_0.bin", rng.integers(0, 65535, 5000))
pyhelp.llmc(T + "/w_1.bin", rng.integers(0, 2**31, 5000), u32=True)  # wider than w_0
open(T + "/trunc.bin", "wb").write(open(T + "/s_0.bin", "rb").read()[:3000])
open(T + "/garbage.bin", "wb").write(b"not a shard" * 200)
os.mkfifo(T + "/fifo.bin")
good = T + "/s_*.bin"

def c_reason(args):
    r = subprocess.run([build + "/loader/loader-dump", "--steps", "1"] + [str(a) for a in args],
                       stderr=subprocess.PIPE, text=True, timeout=30, env=pyhelp.c_env())
    lines = [l for l in r.stderr.splitlines() if l.startswith("loader-dump: ")]
    if r.returncode == 0 or len(lines) != 1:
        raise SystemExit("loader-dump %s: rc %d, stderr %r" % (args, r.returncode, r.stderr))
    return lines[0][len("loader-dump: "):]

# (python kwargs, the same for loader-dump, exception class)
cases = [
    (dict(paths=good, seq_len=64, batch=4, rank=2, world=2), ["--rank", 2, "--world", 2], ValueError),
    (dict(paths=good, seq_len=64, batch=0), ["--batch", 0], ValueError),
    (dict(paths=good, seq_len=0, batch=4), ["--seq", 0], ValueError),
    (dict(paths=good, seq_len=64, batch=4, world=2, global_batch=12),
        ["--world", 2, "--global-batch", 12], ValueError),
    (dict(paths=good, seq_len=4000, batch=4), ["--seq", 4000], ValueError),
    (dict(paths=good, seq_len=64, batch=4, block_bytes=1 << 30), ["--block-bytes", 1 << 30], ValueError),
    (dict(paths=good, seq_len=64, batch=4, window_blocks=5000), ["--window-blocks", 5000], ValueError),
    (dict(paths=good, seq_len=64, batch=4, buffers=100000), ["--buffers", 100000], ValueError),
    (dict(paths=T + "/nothing_*.bin", seq_len=64, batch=4), [], OSError),
    (dict(paths=T + "/missing.bin", seq_len=64, batch=4), [], FileNotFoundError),
    (dict(paths=T + "/trunc.bin", seq_len=64, batch=4), [], ValueError),
    (dict(paths=T + "/garbage.bin", seq_len=64, batch=4), [], ValueError),
    (dict(paths=T + "/w_*.bin", seq_len=64, batch=4), [], ValueError),
    (dict(paths=T + "/fifo.bin", seq_len=64, batch=4), [], ValueError),
    (dict(paths="/nonexistent-dir/*.bin", seq_len=64, batch=4), [], OSError),
    (dict(paths=T + "/s_0.bin", seq_len=64, batch=4, format="megatron"),
        ["--format", "megatron"], OSError),
]
for kw, dump_args, cls in cases:
    try:
        ferry.TokenLoader(**kw)
    except Exception as e:
        got = e.strerror if isinstance(e, OSError) else str(e)
        want = c_reason(["--data", kw["paths"], "--seq", kw["seq_len"], "--batch", kw["batch"],
                         "--shuffle"] + dump_args)
        if type(e) is not cls and not (cls is OSError and isinstance(e, OSError)):
            raise SystemExit("%s: %s, want %s" % (kw, type(e).__name__, cls.__name__))
        if got != want:
            raise SystemExit("%s: python says %r, the C loader %r" % (kw, got, want))
        print("ok: %s: %s" % (type(e).__name__, got))
    else:
        raise SystemExit("%s was accepted" % kw)

# What the C config cannot hold: refused by the C side by name, before the loader.
for kw, want in ((dict(seq_len=-1), "seq_len -1: want 0 to 4294967295"),
                 (dict(batch=1 << 40), "batch 1099511627776: want 0 to 4294967295"),
                 (dict(world=0), "world 0: want 1 to 4294967295"),
                 (dict(rank=-3), "rank -3: want 0 to 4294967295"),
                 (dict(format="parquet"), "format parquet: want auto, llmc, raw-u16, "
                                          "raw-u32 or megatron"),
                 (dict(seed=-1), "seed -1: want 0 to 18446744073709551615"),
                 (dict(paths=good + "\0x"), "paths: a NUL byte in %r" % (good + "\0x")),
                 (dict(paths=""), "no paths given")):
    args = dict(paths=good, seq_len=64, batch=4)
    args.update(kw)
    try:
        ferry.TokenLoader(**args)
    except ValueError as e:
        if str(e) != want:
            raise SystemExit("%s: %r, want %r" % (kw, str(e), want))
        print("ok: ValueError: %s" % e)
    else:
        raise SystemExit("%s was accepted" % kw)
for kw in (dict(seq_len="64"), dict(batch=2.5), dict(paths=[good])):
    args = dict(paths=good, seq_len=64, batch=4)
    args.update(kw)
    try:
        ferry.TokenLoader(**args)
    except TypeError as e:
        print("ok: TypeError: %s" % e)
    else:
        raise SystemExit("%s was accepted" % kw)

# A shard cut short while the loader reads (file order, tiny read-ahead): the batch that
# reaches the cut raises OSError (EIO) naming the shard, and so does every later call.
big = T + "/big.bin"
pyhelp.llmc(big, rng.integers(0, 65535, 400000), vocab=65535)
l = ferry.TokenLoader(big, 64, 4, shuffle=False, buffers=1)
l.next_batch()
os.truncate(big, 1024 + 2 * 20000)
for attempt in range(2):
    try:
        for _ in range(2000):
            l.next_batch()
    except OSError as e:
        if e.errno != errno.EIO or big not in e.strerror or "\n" in e.strerror:
            raise SystemExit("a cut shard: %r" % e)
        print("ok: OSError after the shard was cut: %s" % e.strerror)
    else:
        raise SystemExit("2000 batches past a cut shard")
l.close()
try:
    l.next_batch()
except ValueError as e:
    print("ok: a closed loader: %s" % e)
else:
    raise SystemExit("a closed loader gave a batch")

# A forked child has none of the loader's threads: using it raises, and the child's exit
# (which frees its copy of the loader) does not wait for threads that are not there.
import time
l = ferry.TokenLoader(good, 64, 4)
l.next_batch()
pid = os.fork()
if pid == 0:
    try:
        l.next_batch()
        code = 1
    except RuntimeError as e:
        code = 0 if "open one in each process" in str(e) else 2
    del l
    sys.exit(code)
for _ in range(200):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    raise SystemExit("the forked child did not exit within 20 s")
if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit("the forked child: exit %d" % os.waitstatus_to_exitcode(status))
l.next_batch()  # the parent's loader is untouched
print("ok: a forked child is refused the loader and exits")

# Forked while another thread of the parent is inside next_batch (holding the loader's lock,
# which no thread of the child would ever release): the child is refused the loader all the
# same, and closes it, without waiting. Before the fix both hung, in 20 forks of 20.
import threading
stop = []
def loop():
    while not stop:
        l.next_batch()
t = threading.Thread(target=loop)
t.start()
time.sleep(0.05)
for trial in range(10):
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            l.next_batch()
            code = 1
        except RuntimeError as e:
            code = 0 if "open one in each process" in str(e) else 2
        l.close()
        os._exit(code)
    for _ in range(100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        stop.append(1)
        raise SystemExit("fork %d: the child hung on the loader a parent's thread was using" %
                         trial)
    if os.waitstatus_to_exitcode(status) != 0:
        stop.append(1)
        raise SystemExit("fork %d: the child: exit %d" % (trial, os.waitstatus_to_exitcode(status)))
stop.append(1)
t.join()
l.close()
print("ok: forked while a thread was in next_batch: the child is refused the loader, closes it")
PY
pass "bad arguments and bad shards raise with the C loader's one-line reason"
