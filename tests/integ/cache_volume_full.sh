#!/usr/bin/env bash
# The cache lives on a small volume (an 8 MiB tmpfs) and no --cache-size is given: reading
# files much larger than the volume, and opening many files never cached, never fails: every
# open and every read succeeds with the source's bytes (from the network). `ferry warm`
# succeeds or fails with one clear line, and `ferry stat --json` says the cache is degraded
# or counts disk errors.
. "$(dirname "$0")/lib.sh"
need_fuse
[ "$(id -u)" = 0 ] || skip "mounting a tmpfs needs root"
mkdir -p "$T/vol"
mount -t tmpfs -o size=8m,mode=0700 ferry-test-vol "$T/vol" || fail "cannot mount a tmpfs"
make_tree "$T/src" big1.bin:24M big2.bin:17M
many_files "$T/src/many" 60 400000
make_tree "$T/src" warm/a.bin:6M warm/b.bin:5M
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M --cache-dir "$T/vol/cache"

log "files larger than the cache volume"
reads_right_or_eio "$T/src" "$T/mnt" --strict big1.bin big2.bin
df -k "$T/vol" | tail -1 | awk '{ print "cache volume: " $3 " KiB used of " $2 }'

log "60 files never cached, each opened and read whole"
( cd "$T/src" && ls many ) | sed 's|^|many/|' >"$T/names"
mapfile -t names <"$T/names"
reads_right_or_eio "$T/src" "$T/mnt" --strict "${names[@]}"
# Again, now that the volume has been full for a while, and with the big files once more.
reads_right_or_eio "$T/src" "$T/mnt" --strict big2.bin "${names[@]:0:10}"

log "ferry warm of a subtree larger than the volume"
rc=0
timeout 120 "$FERRY" warm "$T/mnt/warm" >"$T/warm.out" 2>"$T/warm.err" </dev/null || rc=$?
[ "$rc" -ne 124 ] || fail "ferry warm still running after 120 s"
[ "$rc" -lt 128 ] || fail "ferry warm killed by signal $((rc - 128))"
if [ "$rc" -ne 0 ]; then
	[ "$(grep -c . "$T/warm.err")" -eq 1 ] ||
		{ sed 's/^/  stderr: /' "$T/warm.err" >&2; fail "ferry warm failed ($rc) without one clear line"; }
	log "ferry warm failed cleanly: $(cat "$T/warm.err")"
else
	log "ferry warm succeeded"
fi
reads_right_or_eio "$T/src" "$T/mnt" --strict warm/a.bin warm/b.bin

log "ferry stat says so"
degraded=$(stat_json "$T/mnt" degraded)
disk_errors=$(stat_json "$T/mnt" disk_errors)
log "degraded $degraded, disk_errors $disk_errors"
[ "$degraded" = True ] || [ "$disk_errors" -gt 0 ] ||
	fail "a full cache volume is neither degraded nor counted in disk_errors"
timeout 10 ls "$T/mnt" >/dev/null || fail "the mount died"
umount_ferry "$T/mnt"
pass
