#!/usr/bin/env bash
# A single-file http source whose URL carries a token in its query (as a presigned URL does):
# the bytes are read with the full URL, but the token shows nowhere a local user can look:
# not in /proc/mounts (the fsname), not in the daemon's /proc/PID/cmdline, not in
# `ferry stat`, not in user.ferry.source, not in the daemon's log lines (even at -vv).
. "$(dirname "$0")/lib.sh"
need_fuse
token=s3cr3t-T0KEN-4242
make_tree "$T/src" data.bin:3M
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/data.bin?X-Token=$token&expires=99"

mount_ferry "$url" "$T/mnt" --chunk-size 1M
cmp "$T/src/data.bin" "$T/mnt/data.bin" || fail "bytes through the mount differ"
nginx_requests | grep -q "X-Token=$token" || fail "the server never saw the token"
grep -q "127.0.0.1:$PORT/data.bin" /proc/mounts || fail "the mount is not in /proc/mounts"
grep -q "$token" /proc/mounts && fail "/proc/mounts shows the token: $(grep "$PORT" /proc/mounts)"
grep -q "REDACTED" /proc/mounts || fail "/proc/mounts does not say the query was redacted"
pid=$(stat_json "$T/mnt" pid)
[ -r "/proc/$pid/cmdline" ] || fail "no daemon process $pid"
tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$token" &&
	fail "the daemon's command line shows the token: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "127.0.0.1:$PORT/data.bin?RE" ||
	fail "the daemon's command line lost the URL: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
timeout 30 "$FERRY" stat "$T/mnt" >"$T/stat.txt" || fail "ferry stat failed"
timeout 30 "$FERRY" stat --json "$T/mnt" >>"$T/stat.txt" || fail "ferry stat --json failed"
grep -q "$token" "$T/stat.txt" && fail "ferry stat shows the token: $(grep "$token" "$T/stat.txt")"
grep -q "source.*REDACTED" "$T/stat.txt" || fail "ferry stat does not show the redacted source"
for p in "$T/mnt" "$T/mnt/data.bin"; do
	v=$(xattr "$p" user.ferry.source)
	case $v in *"$token"*) fail "user.ferry.source of $p shows the token: $v" ;; esac
	case $v in *REDACTED*) ;; *) fail "user.ferry.source of $p is not redacted: $v" ;; esac
done
umount_ferry "$T/mnt"

log "the daemon's log lines, in the foreground with -vv (debug, and no libcurl trace)"
mkdir -p "$T/mnt2"
echo "$T/mnt2" >>"$T/.mounts"
"$FERRY" mount -f -v -v --cache-dir "$T/cache" --chunk-size 1M "$url" "$T/mnt2" 2>"$T/fg.log" &
fg=$!
echo "$fg" >>"$T/.pids"
for _ in $(seq 100); do is_mounted "$T/mnt2" && break; sleep 0.1; done
is_mounted "$T/mnt2" || fail "the foreground mount did not come up: $(cat "$T/fg.log")"
cmp "$T/src/data.bin" "$T/mnt2/data.bin" || fail "bytes through the foreground mount differ"
tr '\0' ' ' <"/proc/$fg/cmdline" | grep -q "$token" && fail "the foreground daemon's command line shows the token"
umount_ferry "$T/mnt2"
wait "$fg" || fail "the foreground daemon exited with $?"
grep -q "serving" "$T/fg.log" || fail "no log line to check: $(cat "$T/fg.log")"
grep -q "$token" "$T/fg.log" && fail "the log shows the token: $(grep "$token" "$T/fg.log")"
pass
