#!/usr/bin/env bash
# Under umask 000, a mount keeps its listings private (files 0600, directories 0700). Another
# user then plants an entry, a symlink to /etc/shadow, in the kept listing of a directory
# (a file owned by uid 65534, and one made writable by others): the next mount, offline with
# the server down, lists neither and does not serve them, even with outside symlinks allowed.
. "$(dirname "$0")/lib.sh"
need_fuse
[ "$(id -u)" = 0 ] || fail "this test plants a file of another uid: it must run as root"
make_tree "$T/src" top.bin:100K sub/a.bin:200K sub2/b.bin:300K
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"

(umask 000 && mount_ferry "$url" "$T/mnt" --cache-dir "$T/cache" --chunk-size 1M)
ls "$T/mnt/sub" "$T/mnt/sub2" >/dev/null || fail "cannot list the subdirectories"
cmp "$T/src/sub/a.bin" "$T/mnt/sub/a.bin" || fail "sub/a.bin differs"
umount_ferry "$T/mnt"

mode() { stat -c %a "$1"; }
[ "$(mode "$T/cache")" = 700 ] || fail "the cache root ferry made is $(mode "$T/cache"), want 700"
lists=$(find "$T/cache" -type d -name listings)
[ "$(echo "$lists" | grep -c .)" = 1 ] || fail "want one listings directory, found: $lists"
[ "$(mode "$lists")" = 700 ] || fail "$lists is $(mode "$lists"), want 700"
[ "$(mode "$(dirname "$lists")")" = 700 ] || fail "the source's cache dir is $(mode "$(dirname "$lists")"), want 700"
for f in "$lists"/*.list; do
	[ "$(mode "$f")" = 600 ] || fail "kept listing $f is $(mode "$f") under umask 000, want 600"
done

# The kept listings of sub and sub2: the files that name a.bin and b.bin.
sub=$(grep -l 'a\.bin' "$lists"/*.list)
sub2=$(grep -l 'b\.bin' "$lists"/*.list)
[ -n "$sub" ] && [ -n "$sub2" ] || fail "no kept listing of sub or sub2"
for f in "$sub" "$sub2"; do
	printf 'l 11 1700000000.000000000 - shadow %%2Fetc%%2Fshadow\nf 5 1700000000.000000000 - planted.bin\n' >>"$f"
done
chown 65534:65534 "$sub"
chmod 0666 "$sub2"

stop_nginx
curl -s -o /dev/null "$url" && fail "the server still answers"
log "remount offline, outside symlinks allowed: only the planted entries would be missing"
mount_ferry "$url" "$T/mnt" --cache-dir "$T/cache" --chunk-size 1M --allow-outside-symlinks
grep -q offline "$T/.mount.err" || fail "the remount is not offline: $(cat "$T/.mount.err")"
[ -e "$T/mnt/sub" ] || fail "the root's own listing was not served"
for d in sub sub2; do
	ls -a "$T/mnt/$d" >"$T/ls.$d" 2>&1 || true
	grep -q shadow "$T/ls.$d" && fail "$d lists the planted symlink: $(cat "$T/ls.$d")"
	grep -q planted "$T/ls.$d" && fail "$d lists the planted file: $(cat "$T/ls.$d")"
	[ -L "$T/mnt/$d/shadow" ] && fail "$d/shadow is served"
done
[ -e "$sub" ] && fail "the planted listing of another uid is still there"
[ -e "$sub2" ] && fail "the listing others could write is still there"
umount_ferry "$T/mnt"
pass
