#!/usr/bin/env bash
# Read some files whole, part of another, warm a subtree; unmount; stop the server; remount
# the same URL on the same cache: it comes up offline and serves every byte read before,
# and a byte never read fails with EIO, never with wrong bytes.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" whole.bin:3M part.bin:6M never.bin:2M warm/a:1M warm/b/c:2500K warm/e:0
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"
mount_ferry "$url" "$T/mnt" --chunk-size 1M
cmp "$T/src/whole.bin" "$T/mnt/whole.bin" || fail "whole.bin differs while online"
# 100 KiB from the middle of the second chunk of part.bin.
dd if="$T/mnt/part.bin" of="$T/part.piece" bs=100K skip=15 count=1 status=none
cmp "$T/part.piece" <(dd if="$T/src/part.bin" bs=100K skip=15 count=1 status=none) ||
	fail "part.bin piece differs while online"
timeout 60 "$FERRY" warm "$T/mnt/warm" >/dev/null || fail "ferry warm failed"
for f in warm/a warm/b/c; do
	[ "$(xattr "$T/mnt/$f" user.ferry.cached)" = "$(stat -c %s "$T/src/$f")" ] ||
		fail "$f is not all cached after ferry warm"
done
umount_ferry "$T/mnt"
stop_nginx
curl -s -o /dev/null "$url" && fail "the server still answers"

log "remount with the server down"
mount_ferry "$url" "$T/mnt" --chunk-size 1M
[ -s "$T/.mount.err" ] || fail "an offline mount came up without a warning"
[ "$(grep -c . "$T/.mount.err")" -eq 1 ] || fail "an offline mount warned more than one line"
grep -q offline "$T/.mount.err" || fail "the warning does not say the mount is offline"
[ "$(stat_json "$T/mnt" offline)" = True ] || fail "ferry stat --json does not say offline"
same_tree "$T/src" "$T/mnt" --no-data
cmp "$T/src/whole.bin" "$T/mnt/whole.bin" || fail "whole.bin differs offline"
cmp "$T/part.piece" <(dd if="$T/mnt/part.bin" bs=100K skip=15 count=1 status=none) ||
	fail "the part of part.bin read before differs offline"
same_tree "$T/src/warm" "$T/mnt/warm"
"$PY" - "$T/mnt/never.bin" "$T/mnt/part.bin" <<'PY'
import errno, os, sys
for path, off in ((sys.argv[1], 0), (sys.argv[2], 5 << 20)):
    fd = os.open(path, os.O_RDONLY)
    try:
        b = os.pread(fd, 4096, off)
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit("%s at %d: %s, want EIO" % (path, off, e))
        continue
    sys.exit("%s at %d: read %d bytes from a server that is down" % (path, off, len(b)))
print("uncached ranges fail with EIO")
PY
ls "$T/mnt" >/dev/null || fail "the mount died after EIO"
umount_ferry "$T/mnt"
pass
