#!/usr/bin/env bash
# A server that ignores If-Match (it serves whatever is on disk now, with that file's ETag) and a
# file replaced under a reader by another version of the same size (another mtime, so another
# ETag). Every 4 KiB block of each version is stamped with (version, offset), so a mix is
# visible. The reader holds the file open and reads it block by block across the replacement:
# every block it gets is the version it opened, or the read fails with ESTALE or EIO; never a
# block of the new version. A file replaced while nobody has it open: a new open after the
# metadata TTL reads the new version whole.
. "$(dirname "$0")/lib.sh"
need_fuse
size=$((4 << 20))
mkdir -p "$T/src"

# stamp VERSION MTIME: writes version VERSION of src/v.bin (via a rename, as a sync tool would)
# with mtime MTIME (seconds since the epoch).
stamp() {
	"$PY" - "$T/src" "$1" "$2" "$size" <<'PY'
import os, struct, sys
root, version, mtime, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tmp = os.path.join(root, ".v.bin.tmp")
with open(tmp, "wb") as f:
    for off in range(0, size, 4096):
        f.write(struct.pack("<QQ", version, off) * 256)
os.utime(tmp, (mtime, mtime))
os.rename(tmp, os.path.join(root, "v.bin"))
PY
}

cat >"$T/reader.py" <<'PY'
# reader.py MODE PATH WANT SIZE: MODE held: open PATH, read its first 4 blocks (so the version is
# pinned and one chunk cached, but ferry's readahead has not fetched the rest), print
# "ready", wait for a line on stdin (the replacement), then read every block; each block must be
# version WANT or fail with ESTALE/EIO. MODE fresh: read every block; each must be version WANT.
import errno, os, struct, sys
mode, path, want, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def block(off, got):
    recs = {got[i:i + 16] for i in range(0, len(got), 16)}
    if len(got) != 4096 or len(recs) != 1:
        return "a MIX or garbage (%d bytes, %d different stamps)" % (len(got), len(recs))
    v, o = struct.unpack("<QQ", recs.pop())
    if o != off:
        return "the block of offset %d" % o
    return None if v == want else "version %d" % v
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
counts, bad = {"right": 0}, []
def read_block(off):
    try:
        got = os.pread(fd, 4096, off)
    except OSError as e:
        en = errno.errorcode.get(e.errno, str(e.errno))
        if mode == "fresh" or en not in ("ESTALE", "EIO"):
            bad.append("block at %d: %s" % (off, e))
        else:
            counts[en] = counts.get(en, 0) + 1
        return
    why = block(off, got)
    if why:
        bad.append("block at %d: %s, want version %d" % (off, why, want))
    else:
        counts["right"] += 1
off = 0
if mode == "held":
    for off in range(0, 4 * 4096, 4096):
        read_block(off)
    print("ready", flush=True)
    sys.stdin.readline()
    off = 4 * 4096
for off in range(off, size, 4096):
    read_block(off)
os.close(fd)
print("%s: %s" % (mode, ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()))), flush=True)
for b in bad[:10]:
    print("BAD", b, file=sys.stderr)
if bad:
    sys.exit("%d blocks wrong, %d of them of another version" %
             (len(bad), sum("version" in b for b in bad)))
PY

now=$(date +%s)
stamp 1 $((now - 3000))
start_faultserver "$T/src" --ignore-if-match
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 256K --cache-dir "$T/cache" --metadata-ttl 0 \
	--dir-readahead 0

log "replaced under an open file: each block is the opened version, or ESTALE/EIO"
coproc READER { timeout -k 5 60 "$PY" "$T/reader.py" held "$T/mnt/v.bin" 1 "$size" 2>&1; }
reader_pid=$READER_PID
read -r -t 60 line <&"${READER[0]}" || fail "the reader did not start"
[ "$line" = ready ] || fail "reader: $line"
stamp 2 $((now - 2000))
echo go >&"${READER[1]}"
cat <&"${READER[0]}" || true
wait "$reader_pid" && rc=0 || rc=$?
failed=""
[ "$rc" -eq 0 ] || { echo "FAILED: the open file mixed versions (rc $rc)" >&2; failed="$failed held"; }

log "replaced while not open: a new open reads the new version"
stamp 3 $((now - 1000))
sleep 1
timeout -k 5 60 "$PY" "$T/reader.py" fresh "$T/mnt/v.bin" 3 "$size" ||
	{ echo "FAILED: a new open did not read the new version" >&2; failed="$failed fresh"; }
umount_ferry "$T/mnt"
[ -z "$failed" ] || fail "failed:$failed (see above)"
pass
