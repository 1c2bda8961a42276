#!/usr/bin/env bash
# Eight threads read one cold file at once, each in its own order and block size, then eight
# processes do the same on a fresh cache: every thread sees the source's bytes, and each
# chunk is fetched once however many readers wait on it.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" big.bin:48M
serve_nginx "$T/src"

readers() { # mode(threads|procs) file
	"$PY" - "$@" "$T/src/big.bin" <<'PY'
import hashlib, os, random, sys, threading, multiprocessing
mode, path, src = sys.argv[1:4]
want = hashlib.sha256(open(src, "rb").read()).hexdigest()
size = os.path.getsize(src)
def one(i, out):
    rng = random.Random(i)
    bs = [4096, 65536, 131072, 1 << 20, 3 << 20, 12345, 8 << 20, 500000][i]
    offs = list(range(0, size, bs))
    if i % 2:
        rng.shuffle(offs)
    buf = bytearray(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offs:
            b = os.pread(fd, bs, off)
            if len(b) != min(bs, size - off):
                out.put("reader %d: short read at %d: %d" % (i, off, len(b)))
                return
            buf[off:off + len(b)] = b
    finally:
        os.close(fd)
    got = hashlib.sha256(buf).hexdigest()
    out.put(None if got == want else "reader %d (bs %d): sha256 differs" % (i, bs))
if mode == "threads":
    import queue
    q = queue.Queue()
    ts = [threading.Thread(target=one, args=(i, q)) for i in range(8)]
else:
    q = multiprocessing.Queue()
    ts = [multiprocessing.Process(target=one, args=(i, q)) for i in range(8)]
for t in ts:
    t.start()
errs = [e for e in (q.get(timeout=120) for _ in ts) if e]
for t in ts:
    t.join()
if errs:
    sys.exit("\n".join(errs))
print("8 %s agree with the source" % mode)
PY
}

mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M
: >"$NGINX_STATE/access.log"
readers threads "$T/mnt/big.bin"
# Single flight: one GET per chunk at most, whatever the eight readers asked (a retry would
# add one; a clean loopback run has none).
nr_gets=$(nginx_requests | awk '$1 == "GET" && $2 == "/big.bin"' | wc -l)
[ "$nr_gets" -le 48 ] || fail "$nr_gets GETs of big.bin for 48 chunks: a chunk was fetched twice"
umount_ferry "$T/mnt"

mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache-procs"
readers procs "$T/mnt/big.bin"
umount_ferry "$T/mnt"
pass "$nr_gets GETs for 48 chunks"
