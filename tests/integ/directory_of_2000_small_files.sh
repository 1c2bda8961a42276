#!/usr/bin/env bash
# One directory of 2,000 small files (0..16 KiB) beside a few subdirectories: the listing has
# every name, stat has every size, and every file reads back as the source's bytes. The
# unmount syncs 2,000 maps at once (cache_sync's threads): remounted with the server down, every
# file is served from the cache.
. "$(dirname "$0")/lib.sh"
need_fuse
many_files "$T/src/many" 2000 16384
make_tree "$T/src" top.bin:10K sub/a:1 sub/b:2
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"

nr=$(find "$T/mnt/many" -mindepth 1 -maxdepth 1 -printf x | wc -c)
[ "$nr" -eq 2000 ] || fail "ls shows $nr of 2000 files"
diff <(cd "$T/src/many" && ls -l | awk '{ print $5, $9 }') \
	<(cd "$T/mnt/many" && ls -l | awk '{ print $5, $9 }') >&2 || fail "ls -l sizes differ"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
stop_nginx
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
grep -q offline "$T/.mount.err" || fail "the remount with the server down is not offline"
same_tree "$T/src" "$T/mnt"
[ "$(stat_json "$T/mnt" misses)" = 0 ] || fail "$(stat_json "$T/mnt" misses) misses offline"
umount_ferry "$T/mnt"
pass
