#!/usr/bin/env bash
# A mount whose daemon was killed (kill -9: the FUSE connection is gone, everything on it
# answers ENOTCONN): `ferry stat`, `ferry stat --json`, `ferry warm` of the mount and of a
# directory in it each fail with one line saying that the daemon is gone and that
# `ferry umount MOUNTPOINT` clears the mount; `ferry umount` then clears it, also with a file
# on it still open and the mount point written with a trailing slash; the same mount point
# then mounts again.
# Twice: with the default metadata TTL (1 h), under which the kernel still answers stat from
# what it kept, and with --metadata-ttl 0, under which even the mount point cannot be stat'ed.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a/x.bin:3M b.bin:1M
serve_nginx "$T/src"

kill_daemon() { # mountpoint
	local pid
	pid=$(ferry_daemon_pid "$1")
	kill -9 "$pid"
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	! kill -0 "$pid" 2>/dev/null || fail "the daemon survived kill -9"
	is_mounted "$1" || fail "the mount went away with its daemon: nothing to test"
}

# says_daemon_gone DESC CMD...: one line naming the dead daemon and the command that clears it.
says_daemon_gone() {
	local desc=$1
	shift
	expect_clean_failure "$desc" "$M" "$@"
	grep -q "daemon .* is gone" "$T/.err" || fail "$desc: does not say the daemon is gone"
	grep -qF "\`ferry umount $M\`" "$T/.err" || fail "$desc: does not say that ferry umount $M clears it"
}

log "with the default metadata TTL"
M=$T/kept
mount_ferry "http://127.0.0.1:$PORT/" "$M" --chunk-size 1M
cmp "$T/src/a/x.bin" "$M/a/x.bin" || fail "a/x.bin reads other bytes than the source's"
kill_daemon "$M"
says_daemon_gone "ferry stat" "$FERRY" stat "$M"
says_daemon_gone "ferry warm of a directory in it" "$FERRY" warm "$M/a"
timeout 30 "$FERRY" umount "$M" || fail "ferry umount $M failed on the dead mount"
! is_mounted "$M" || fail "$M is still mounted after ferry umount"

log "with --metadata-ttl 0"
M=$T/mnt
mount_ferry "http://127.0.0.1:$PORT/" "$M" --chunk-size 1M --metadata-ttl 0
cmp "$T/src/b.bin" "$M/b.bin" || fail "b.bin reads other bytes than the source's"
# A file held open, as a training job that was reading would.
sleep 600 <"$M/b.bin" &
holder=$!
echo "$holder" >>"$T/.pids"
kill_daemon "$M"
says_daemon_gone "ferry stat" "$FERRY" stat "$M"
says_daemon_gone "ferry stat --json" "$FERRY" stat --json "$M"
says_daemon_gone "ferry warm of the mount" "$FERRY" warm "$M"
says_daemon_gone "ferry warm of a directory in it" "$FERRY" warm "$M/a"
(cd "$T" && says_daemon_gone "ferry stat by a relative path" "$FERRY" stat "./mnt/")

log "ferry umount clears it, with a file still open"
timeout 30 "$FERRY" umount "$M/" || fail "ferry umount $M/ failed on the dead mount"
! is_mounted "$M" || fail "$M is still mounted after ferry umount"
kill "$holder" 2>/dev/null || true

log "and the mount point mounts again"
mount_ferry "http://127.0.0.1:$PORT/" "$M" --chunk-size 1M
cmp "$T/src/a/x.bin" "$M/a/x.bin" || fail "a/x.bin reads other bytes than the source's after the remount"
timeout 30 "$FERRY" stat "$M" >/dev/null || fail "ferry stat on the new mount failed"
umount_ferry "$M"
pass
