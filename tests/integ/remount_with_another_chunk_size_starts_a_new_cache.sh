#!/usr/bin/env bash
# The chunk size is part of the cache identity: a remount of the same source with another
# chunk size starts its own cold cache (no refusal) and reads the right bytes; with the server
# down, the other chunk size's cache is not served as this one (the mount fails), while the
# original chunk size still comes up offline.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" f.bin:3M
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"

mount_ferry "$url" "$T/mnt" --chunk-size 1M
cmp "$T/src/f.bin" "$T/mnt/f.bin" || fail "f.bin differs at 1M chunks"
umount_ferry "$T/mnt"
log "remount with 2M chunks"
mount_ferry "$url" "$T/mnt" --chunk-size 2M
[ "$(xattr "$T/mnt/f.bin" user.ferry.cached)" = 0 ] || fail "the 2M cache is not a new one"
cmp "$T/src/f.bin" "$T/mnt/f.bin" || fail "f.bin differs at 2M chunks"
[ "$(stat_json "$T/mnt" chunk_bytes)" = 2097152 ] || fail "the mount does not use 2M chunks"
umount_ferry "$T/mnt"
[ "$(find "$T/cache" -mindepth 1 -maxdepth 1 -type d | wc -l)" = 2 ] ||
	fail "want two caches of one source: $(ls "$T/cache")"

stop_nginx
log "server down, a chunk size never mounted: no cache of its own, so no offline mount"
mkdir -p "$T/mnt"
if timeout 60 "$FERRY" mount --cache-dir "$T/cache" --chunk-size 4M "$url" "$T/mnt" 2>"$T/err"; then
	echo "$T/mnt" >>"$T/.mounts"
	fail "came up with another chunk size's cache: $(cat "$T/err")"
fi
! is_mounted "$T/mnt" || fail "something is mounted after a failed mount"
log "server down, the first chunk size: offline"
mount_ferry "$url" "$T/mnt" --chunk-size 1M
grep -q offline "$T/.mount.err" || fail "not offline: $(cat "$T/.mount.err")"
cmp "$T/src/f.bin" "$T/mnt/f.bin" || fail "f.bin differs offline"
umount_ferry "$T/mnt"
pass
