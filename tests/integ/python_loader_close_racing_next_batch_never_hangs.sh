#!/usr/bin/env bash
# close() from one thread while another is inside next_batch() neither hangs nor touches freed
# memory: 200 trials each of a thread looping next_batch() (the default's lent buffers, then
# lent=False copies, then copy=False views) and
# the main thread calling close() after 2 ms; the looping thread's batch either finishes or
# raises "the loader is closed" (ValueError, one line), and the C loader is freed only after
# the call in flight returns. Before the fix close() dropped the last reference to the C loader
# with no lock, loader_free ran under a loader_next_batch, and this hung within a few trials.
. "$(dirname "$0")/python_lib.sh"

timeout 120 "$PY" - "$T" <<'PY'
import sys, threading, time, numpy as np, ferry, pyhelp
T = sys.argv[1]
rng = np.random.default_rng(3)
for i, n in enumerate([40000, 30000]):
    pyhelp.llmc("%s/s_%d.bin" % (T, i), rng.integers(0, 65535, n), vocab=65535)
data = T + "/s_*.bin"

for mode in (dict(), dict(lent=False), dict(copy=False)):
    closed = 0
    for trial in range(200):
        l = ferry.TokenLoader(data, 64, 4, seed=trial, block_bytes=4096, buffers=2, **mode)
        errors, got = [], [0]

        def loop():
            try:
                while True:
                    x, y = l.next_batch()
                    int(x[0, 0]) + int(y[-1, -1])  # touch the batch
                    got[0] += 1
            except ValueError as e:
                if str(e) != "the loader is closed":
                    errors.append(repr(e))
            except BaseException as e:
                errors.append(repr(e))

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.002)
        l.close()
        t.join(30)
        if t.is_alive():
            raise SystemExit("trial %d (%s): next_batch still running 30 s after close()"
                             % (trial, mode))
        if errors:
            raise SystemExit("trial %d (%s): next_batch raised %s" % (trial, mode, errors[0]))
        closed += got[0] > 0
        del l
    print("ok: %s: 200 close() calls racing next_batch(), none hung or failed "
          "(%d after some batches)" % (mode or "default", closed))
PY
rc=$?
[ $rc = 124 ] && fail "close() racing next_batch() hung (killed after 120 s)"
[ $rc = 0 ] || fail "close() racing next_batch(): exit status $rc"
pass "close() racing next_batch() finishes or raises, never hangs"
