#!/usr/bin/env bash
# A local tree with symlinks: ones that stay inside the mount are shown and followed; ones
# that are absolute or climb above the mount are hidden, with one warning in the log for the
# whole mount; --allow-outside-symlinks shows every one as the tree has it.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a.bin:10K sub/b.bin:20K
ln -s a.bin "$T/src/to_a"
ln -s ../a.bin "$T/src/sub/up_to_a"
ln -s /etc/passwd "$T/src/abs"
ln -s ../outside "$T/src/climb"
ln -s ../../etc/passwd "$T/src/sub/climb2"

log "default: outside links hidden"
mkdir -p "$T/mnt"
echo "$T/mnt" >>"$T/.mounts"
"$FERRY" mount -f --cache-dir "$T/cache" "$T/src" "$T/mnt" 2>"$T/fg.log" &
fg=$!
echo "$fg" >>"$T/.pids"
for _ in $(seq 100); do is_mounted "$T/mnt" && break; sleep 0.1; done
is_mounted "$T/mnt" || fail "the mount did not come up: $(cat "$T/fg.log")"
[ "$(readlink "$T/mnt/to_a")" = a.bin ] || fail "to_a is not shown"
[ "$(readlink "$T/mnt/sub/up_to_a")" = ../a.bin ] || fail "sub/up_to_a is not shown"
cmp "$T/src/a.bin" "$T/mnt/sub/up_to_a" || fail "sub/up_to_a does not lead to a.bin"
for l in abs climb sub/climb2; do
	[ -L "$T/mnt/$l" ] && fail "$l (target $(readlink "$T/mnt/$l")) is shown"
	ls -a "$(dirname "$T/mnt/$l")" | grep -qx "$(basename "$l")" && fail "$l is listed"
done
umount_ferry "$T/mnt"
wait "$fg" || true
n=$(grep -c "hiding symlink" "$T/fg.log" || true)
[ "$n" = 1 ] || fail "want one warning about hidden symlinks, got $n: $(cat "$T/fg.log")"

log "--allow-outside-symlinks: all shown"
mount_ferry "$T/src" "$T/mnt" --allow-outside-symlinks
[ "$(readlink "$T/mnt/abs")" = /etc/passwd ] || fail "abs is not shown with the option"
[ "$(readlink "$T/mnt/climb")" = ../outside ] || fail "climb is not shown with the option"
[ "$(readlink "$T/mnt/sub/climb2")" = ../../etc/passwd ] || fail "sub/climb2 is not shown"
umount_ferry "$T/mnt"
pass
