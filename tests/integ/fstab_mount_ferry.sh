#!/usr/bin/env bash
# mount.ferry as mount(8) calls it for an fstab line
#   http://host/ds /mnt/ds ferry ro,cache_dir=/var/cache/ferry 0 0
# i.e. `mount.ferry SOURCE DIR -o ro,cache_dir=D,...`: mounts, uses that cache dir, and
# `umount DIR` undoes it. Bad -o options fail cleanly. Then through mount(8) itself, with this
# build's mount.ferry laid over /usr/sbin in a private mount namespace unless it is installed.
. "$(dirname "$0")/lib.sh"
need_fuse
[ -x "$MOUNT_FERRY" ] || fail "mount.ferry is not built at $MOUNT_FERRY"
make_tree "$T/src" ds/a.bin:2M ds/sub/b.bin:33K
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/ds/"
M=$T/mnt
mkdir -p "$M"
echo "$M" >>"$T/.mounts"

timeout 60 "$MOUNT_FERRY" "$url" "$M" -o ro,cache_dir="$T/fscache",cache_size=64M,chunk_size=1M ||
	fail "mount.ferry failed"
is_mounted "$M" || fail "mount.ferry returned 0 but nothing is mounted"
same_tree "$T/src/ds" "$M"
[ "$(disk_used_bytes "$T/fscache")" -gt $((2 << 20)) ] || fail "cache_dir= was not used"
umount "$M" || fail "umount of a mount.ferry mount failed"
! is_mounted "$M" || fail "still mounted after umount"

log "options mount(8) adds (-n, -s, dev/suid/exec words) are accepted"
# The same cache_dir needs the same chunk_size (docs/ferry.md: another one is refused), as
# the same fstab line would give it.
timeout 60 "$MOUNT_FERRY" "$url" "$M" -n -s \
	-o ro,nosuid,nodev,noexec,noatime,cache_dir="$T/fscache",chunk_size=1M ||
	fail "mount.ferry with mount(8)'s generic options failed"
cmp "$T/src/ds/a.bin" "$M/a.bin" || fail "a.bin differs"
umount "$M"

expect_clean_failure "unknown -o option" "$M" \
	"$MOUNT_FERRY" "$url" "$M" -o ro,cache_dir="$T/fscache",chunk_size=1M,no_such_option=1
grep -q no_such_option "$T/.err" || fail "unknown -o option: the error does not name it"
expect_clean_failure "bad cache_size" "$M" \
	"$MOUNT_FERRY" "$url" "$M" -o ro,cache_dir="$T/fscache",chunk_size=1M,cache_size=huge
grep -q huge "$T/.err" || fail "bad cache_size: the error does not name it"

printf '%s %s ferry ro,cache_dir=%s,chunk_size=1M 0 0\n' "$url" "$M" "$T/fscache" >"$T/fstab"
fstab_leg "$T/fstab" "$M" "$T/src/ds" sub/b.bin
pass
