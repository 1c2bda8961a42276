#!/usr/bin/env bash
# A mount made under `umask 000`: the cache directory is 0700 and nothing under it (data,
# maps, listings, meta) is group/other readable or writable; another local user can read
# nothing in the cache and plant nothing in it. A kept listing planted by another user
# (owned by another uid), or garbage, with symlinks to /etc/shadow and to a file of the
# mount, is not served by the next offline mount.
. "$(dirname "$0")/lib.sh"
need_fuse
[ "$(id -u)" = 0 ] || skip "needs root to act as another user"
command -v setpriv >/dev/null || fail "no setpriv (util-linux)"
NOBODY=65534
as_nobody() { setpriv --reuid $NOBODY --regid $NOBODY --clear-groups "$@"; }

make_tree "$T/src" a.bin:2M sub/b.bin:1M sub/deeper/c.bin:300K
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"
# Let another user walk down to the cache dir, so that only the cache's own modes protect it.
chmod 0755 "$T"

umask 000
mount_ferry "$url" "$T/mnt" --chunk-size 1M
umask 022
timed_same_tree 120 "$T/src" "$T/mnt"
umount_ferry "$T/mnt"

log "modes in the cache"
[ "$(stat -c %a "$T/cache")" = 700 ] || fail "cache dir $T/cache is $(stat -c %a "$T/cache"), want 700"
find "$T/cache" -perm /077 -printf '%m %p\n' >"$T/open-modes"
if [ -s "$T/open-modes" ]; then
	sed "s|$T/||; s/^/  /" "$T/open-modes" | head -20 >&2
	fail "$(wc -l <"$T/open-modes") paths in the cache are group/other accessible"
fi
nr_lists=$(find "$T/cache" -name '*.list' | wc -l)
[ "$nr_lists" -ge 3 ] || fail "$nr_lists kept listings, want one per directory (3)"

# A copy to plant into later, before another user had a go at it.
cp -a "$T/cache" "$T/cache.orig"

log "another user reads nothing and plants nothing"
nr_read=0 nr_planted=0
while read -r f; do
	if as_nobody head -c1 "$f" >/dev/null 2>&1; then
		nr_read=$((nr_read + 1))
		echo "  readable by uid $NOBODY: ${f#"$T"/}" >&2
	fi
	if as_nobody sh -c 'echo planted >>"$1"' _ "$f" 2>/dev/null; then
		nr_planted=$((nr_planted + 1))
		echo "  writable by uid $NOBODY: ${f#"$T"/}" >&2
	fi
done < <(find "$T/cache" -type f)
while read -r d; do
	if as_nobody touch "$d/planted" 2>/dev/null; then
		nr_planted=$((nr_planted + 1))
		echo "  uid $NOBODY created a file in ${d#"$T"/}" >&2
	fi
done < <(find "$T/cache" -type d)
[ "$nr_read" -eq 0 ] && [ "$nr_planted" -eq 0 ] ||
	fail "uid $NOBODY read $nr_read cache files and planted $nr_planted"

# plant OWNER MODE: restores the kept listings, then adds to each two symlinks (one to
# /etc/shadow, one to a.bin in the mount, which no symlink policy hides) and, for
# MODE=garbage, a line that does not parse; the listings are then owned by OWNER.
plant() {
	rm -rf "$T/cache"
	cp -a "$T/cache.orig" "$T/cache"
	find "$T/cache" -name '*.list' | while read -r l; do
		printf 'l 11 1700000000.000000000 - planted-shadow %%2Fetc%%2Fshadow\n' >>"$l"
		printf 'l 5 1700000000.000000000 - planted-inside a.bin\n' >>"$l"
		[ "$2" = garbage ] && head -c 300 /dev/urandom >>"$l"
		chown "$1" "$l"
	done
}

# offline_mount_serves_no_plant WHAT: the source is down; the mount either fails cleanly (at
# most two lines: the offline warning, then why it cannot serve) or comes up without the
# planted entries.
offline_mount_serves_no_plant() {
	local rc=0
	mkdir -p "$T/mnt"
	echo "$T/mnt" >>"$T/.mounts"
	timeout 60 "$FERRY" mount --cache-dir "$T/cache" --chunk-size 1M "$url" "$T/mnt" \
		2>"$T/offline.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		[ "$rc" -ne 124 ] || fail "$1: the offline mount still running after 60 s"
		[ "$rc" -lt 128 ] || fail "$1: the offline mount was killed by signal $((rc - 128))"
		[ "$(grep -c . "$T/offline.err")" -ge 1 ] && [ "$(grep -c . "$T/offline.err")" -le 2 ] ||
			{ cat "$T/offline.err" >&2; fail "$1: the offline mount failed without a clear line"; }
		! is_mounted "$T/mnt" || fail "$1: failed, yet left a mount"
		log "$1: the offline mount refused: $(tr '\n' ' ' <"$T/offline.err")"
		return 0
	fi
	is_mounted "$T/mnt" || fail "$1: ferry mount returned 0, nothing mounted"
	for n in planted-shadow planted-inside sub/planted-shadow sub/planted-inside; do
		if [ -e "$T/mnt/$n" ] || [ -L "$T/mnt/$n" ]; then
			ls -l "$T/mnt/$n" >&2
			fail "$1: the offline mount serves the planted entry $n"
		fi
	done
	if timeout 10 cat "$T/mnt/planted-shadow" 2>/dev/null | grep -q '^root:'; then
		fail "$1: /etc/shadow is readable through the mount"
	fi
	log "$1: the offline mount came up without the planted entries ($(ls "$T/mnt" | wc -l) entries)"
	umount_ferry "$T/mnt"
}

stop_nginx
log "listings planted by uid $NOBODY"
plant "$NOBODY:$NOBODY" parsable
offline_mount_serves_no_plant "owned by uid $NOBODY"
log "garbage listings"
plant 0:0 garbage
offline_mount_serves_no_plant "garbage"
pass
