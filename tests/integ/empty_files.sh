#!/usr/bin/env bash
# Empty files at the root, nested, alone in a directory, beside an empty directory, and as a
# single-file URL: size 0, reads give 0 bytes and no error, cat/cp/sha256 agree.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" e0:0 d/e1:0 d/full:5000 only-empty/e2:0 nothing/ \
	x/y/z/e3:0 x/y/z/e4:0
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
same_tree "$T/src" "$T/mnt"
for f in e0 d/e1 only-empty/e2 x/y/z/e3; do
	[ "$(stat -c %s "$T/mnt/$f")" = 0 ] || fail "$f: size is not 0"
	[ "$(cat "$T/mnt/$f" | wc -c)" = 0 ] || fail "$f: cat gave bytes"
	"$PY" - "$T/mnt/$f" <<'PY' || fail "$f: pread past the end is not an empty read"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
assert os.pread(fd, 4096, 0) == b"" and os.pread(fd, 1, 1 << 20) == b""
PY
done
[ -z "$(ls -A "$T/mnt/nothing")" ] || fail "the empty directory is not empty"
cp -r "$T/mnt" "$T/copy"
diff -r "$T/src" "$T/copy" >&2 || fail "cp -r of the mount differs"
umount_ferry "$T/mnt"

log "an empty file as a single-file URL"
mount_ferry "http://127.0.0.1:$PORT/e0" "$T/one" --cache-dir "$T/cache1"
[ "$(stat -c %s "$T/one/e0")" = 0 ] || fail "single empty file: size is not 0"
[ "$(cat "$T/one/e0" | wc -c)" = 0 ] || fail "single empty file: cat gave bytes"
umount_ferry "$T/one"
pass
