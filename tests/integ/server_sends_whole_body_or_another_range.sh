#!/usr/bin/env bash
# A server that answers a ranged GET with 200 and the whole file, or with 206 and another range
# of the same length (its own Content-Range and body): neither is the chunk asked for, so every
# read is EIO or the source's bytes, never bytes from elsewhere in the file; nothing wrong is
# cached (a remount with the server behaving reads the source). A file of one chunk answered
# 200 whole is exactly what was asked: those reads succeed.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" wrong.bin:2M small.bin:300K
# One byte over 2 chunks: the last chunk is short.
"$PY" -c 'import random, sys; open(sys.argv[1], "wb").write(random.Random(5).randbytes(2 * 2**20 + 1))' \
	"$T/src/w200.bin"
start_faultserver "$T/src"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache"

failed=""
log "every ranged GET answered 200 with the whole file"
fault_set "mode=full200&every=1"
# A fetch engine may retry these with backoff before it says EIO (seconds a read, and the
# kernel reads a failed page twice): few reads, and room for that.
CHECK_TIMEOUT=120 check_reads "$T/src" "$T/mnt" --seq 1M --random 1 --seed 200 w200.bin ||
	{ echo "FAILED: full200" >&2; failed="$failed full200"; }
log "a one-chunk file answered 200 whole: that is the chunk"
check_reads "$T/src" "$T/mnt" --all-ok --seq 64K --random 4 small.bin ||
	{ echo "FAILED: full200 of a one-chunk file" >&2; failed="$failed full200-one-chunk"; }

log "every ranged GET answered 206 with another range"
fault_set "mode=wrongrange&every=1"
CHECK_TIMEOUT=120 check_reads "$T/src" "$T/mnt" --seq 1M --random 2 --seed 206 wrong.bin ||
	{ echo "FAILED: wrongrange" >&2; failed="$failed wrongrange"; }
umount_ferry "$T/mnt"

log "remounted on the same cache, the server behaving: nothing wrong was kept"
fault_set "mode=ok"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache"
check_reads "$T/src" "$T/mnt" --all-ok w200.bin wrong.bin small.bin ||
	failed="$failed cached-after-remount"
umount_ferry "$T/mnt"
[ -z "$failed" ] || fail "wrong bytes or errors for:$failed (see above)"
pass
