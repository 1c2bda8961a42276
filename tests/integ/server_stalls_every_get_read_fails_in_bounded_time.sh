#!/usr/bin/env bash
# A server that sends the headers of every chunk GET and then nothing: a read fails with EIO in
# bounded time, and the mount stays up. The bound: a transfer under 1 KiB/s for
# --stall-timeout (3 s here; 30 s by default) is given up, and a chunk is tried at most 6
# times (5 retries, fs/fetch.c) with backoffs under 5 s in all: 6 x 3 s + 15 s.
# server_stalls_after_headers.sh covers one stall and an unmount with a reader waiting.
. "$(dirname "$0")/lib.sh"
need_fuse
LOW_SPEED_S=3
ATTEMPTS=6
bound=$((ATTEMPTS * LOW_SPEED_S + 15))
make_tree "$T/src" stalled.bin:1M other.bin:100K
start_faultserver "$T/src" --mode stallheaders
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache" --dir-readahead 0 \
	--stall-timeout "${LOW_SPEED_S}s"

# O_DIRECT: the kernel sends exactly one read. A buffered read is two when the first fails
# (a readahead read, then the page read again), which doubles the time to the error.
cat >"$T/read_one.py" <<'PY'
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)  # page-aligned, as O_DIRECT wants
try:
    os.preadv(fd, [buf], 0)
except OSError as e:
    print("error:", e)
    sys.exit(0 if e.errno == errno.EIO else 2)
sys.exit("the read succeeded through a server that stalls every GET")
PY
log "one read; the bound is $bound s"
t0=$(date +%s)
timeout -k 5 "$bound" "$PY" "$T/read_one.py" "$T/mnt/stalled.bin" && rc=0 || rc=$?
elapsed=$(($(date +%s) - t0))
log "after $elapsed s: rc $rc; the server saw $(fault_count) GETs"
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "the read still waited after $bound s"
[ "$rc" -eq 0 ] || fail "the read did not fail with EIO (rc $rc)"
ls "$T/mnt" >/dev/null || fail "the mount died"
fault_set "mode=ok"
check_reads "$T/src" "$T/mnt" --all-ok other.bin stalled.bin || fail "the server behaving: see above"
umount_ferry "$T/mnt"
pass
