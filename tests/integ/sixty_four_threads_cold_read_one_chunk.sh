#!/usr/bin/env bash
# 64 threads read the same cold chunk at once, each its own 16 KiB slice (no readahead, so the
# kernel sends each as its own read) and then the whole chunk: every slice and every whole
# chunk is the source's bytes, and the server saw exactly one GET for that chunk.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" data.bin:4M
start_faultserver "$T/src"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache" --dir-readahead 0
fault_set "mode=ok"

cat >"$T/threads.py" <<'PY'
import os, sys, threading
src, path = sys.argv[1], sys.argv[2]
chunk = 1 << 20
off0 = 2 * chunk  # a chunk in the middle: no first-chunk special case
want = open(src, "rb").read()[off0:off0 + chunk]
nr = 64
barrier = threading.Barrier(nr)
errors, wholes = [], [None] * nr
def reader(k):
    try:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        barrier.wait()
        n = chunk // nr
        got = os.pread(fd, n, off0 + k * n)
        if got != want[k * n:(k + 1) * n]:
            errors.append("thread %d: slice of %d bytes is WRONG" % (k, len(got)))
        wholes[k] = os.pread(fd, chunk, off0)
        os.close(fd)
    except Exception as e:
        errors.append("thread %d: %s" % (k, e))
ts = [threading.Thread(target=reader, args=(k,)) for k in range(nr)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for k, w in enumerate(wholes):
    if w is not None and w != want:
        errors.append("thread %d: the whole chunk (%d bytes) is WRONG" % (k, len(w)))
for e in errors[:10]:
    print(e, file=sys.stderr)
if errors:
    sys.exit("%d of %d threads saw errors or wrong bytes" % (len(errors), nr))
print("%d threads: the same right bytes" % nr)
PY
timeout -k 5 60 "$PY" "$T/threads.py" "$T/src/data.bin" "$T/mnt/data.bin" || fail "see above"
fault_gets >"$T/gets"
sed 's/^/  GET /' "$T/gets"
# The chunk is bytes 2097152-3145727; a GET of any range overlapping it counts.
nr_gets=$(awk '$2 == "-" { n++; next } { split($2, r, "-"); if (r[1] + 0 <= 3145727 && r[2] + 0 >= 2097152) n++ } END { print n + 0 }' "$T/gets")
[ "$nr_gets" -eq 1 ] || fail "$nr_gets GETs for the chunk, want exactly one"
umount_ferry "$T/mnt"
pass
