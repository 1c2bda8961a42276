#!/usr/bin/env bash
# --metrics-addr that cannot be served stops `ferry mount` (and mount.ferry with fstab's
# metrics_addr=) before anything is mounted, with one line and a non-zero exit: a port another
# program listens on, a port another ferry mount serves its metrics on, an address that is not
# this host's, malformed addresses. A mount without the option listens on nothing; one with it
# (through fstab's metrics_addr=, and on [::1] where the host has IPv6) serves /metrics there,
# and its unmount stops the server: the port is free again and the daemon is gone.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
need_fuse
need_cmd curl promtool ss
[ -x "$MOUNT_FERRY" ] || fail "mount.ferry is not built at $MOUNT_FERRY"
make_tree "$T/src" ds/a.bin:2M
serve_nginx "$T/src"
src="http://127.0.0.1:$PORT/ds/"
M=$T/mnt
mkdir -p "$M"
fm=("$FERRY" mount --cache-dir "$T/cache" --chunk-size 1M)

# daemon_of MOUNTPOINT EXE: the pid of the daemon (a process of EXE, ferry or mount.ferry,
# whose command line names MOUNTPOINT).
daemon_of() {
	local p exe
	exe=$(realpath "$2")
	for p in $(pgrep -f -- "$1" || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && { echo "$p"; return 0; }
	done
	fail "no daemon of $2 serves $1"
}

# daemon_listens PID: the TCP ports the process listens on, one a line.
daemon_listens() {
	ss -Hltnp | awk -v p="pid=$1," 'index($0, p) { n = split($4, a, ":"); print a[n] }'
}

log "a port another program listens on"
busy=$(free_port)
"$PY" -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(300)' "$busy" >"$T/listener.out" &
echo $! >>"$T/.pids"
for _ in $(seq 100); do
	[ -s "$T/listener.out" ] && break
	sleep 0.05
done
[ -s "$T/listener.out" ] || fail "the listener did not start"
expect_clean_failure "port in use" "$M" "${fm[@]}" --metrics-addr "127.0.0.1:$busy" "$src" "$M"
grep -q "127.0.0.1:$busy: Address already in use" "$T/.err" ||
	fail "port in use: the line does not say so: $(cat "$T/.err")"
expect_clean_failure "port in use, fstab metrics_addr=" "$M" \
	"$MOUNT_FERRY" "$src" "$M" -o "ro,cache_dir=$T/cache,chunk_size=1M,metrics_addr=127.0.0.1:$busy"
grep -q "Address already in use" "$T/.err" ||
	fail "port in use through mount.ferry: the line does not say so: $(cat "$T/.err")"

log "addresses that are not this host's, or not addresses"
expect_clean_failure "address of another host" "$M" \
	"${fm[@]}" --metrics-addr 192.0.2.1:9100 "$src" "$M"
grep -q "Cannot assign requested address" "$T/.err" || fail "the line does not say why: $(cat "$T/.err")"
for bad in nonsense 127.0.0.1 127.0.0.1: :9100 127.0.0.1:0 127.0.0.1:65536 127.0.0.1:80x \
	::1:9100 '[::1:9100' '[::1]' no-such-host.invalid:9100; do
	expect_clean_failure "--metrics-addr '$bad'" "$M" "${fm[@]}" --metrics-addr "$bad" "$src" "$M"
	grep -qF -- "$bad" "$T/.err" || fail "--metrics-addr '$bad': the line does not name it"
done
expect_clean_failure "metrics_addr without a value" "$M" \
	"$MOUNT_FERRY" "$src" "$M" -o "ro,cache_dir=$T/cache,chunk_size=1M,metrics_addr"

log "a mount without --metrics-addr listens on nothing"
mount_ferry "$src" "$M" --chunk-size 1M
pid=$(ferry_daemon_pid "$M")
[ -z "$(daemon_listens "$pid")" ] || fail "a mount without --metrics-addr listens on $(daemon_listens "$pid")"
umount_ferry "$M"

log "fstab's metrics_addr= serves /metrics there, and only there"
mport=$(free_port)
echo "$M" >>"$T/.mounts"
timeout 60 "$MOUNT_FERRY" "$src" "$M" \
	-o "ro,cache_dir=$T/cache,chunk_size=1M,metrics_addr=127.0.0.1:$mport" ||
	fail "mount.ferry with metrics_addr= failed"
is_mounted "$M" || fail "mount.ferry returned 0 but nothing is mounted"
cmp "$T/src/ds/a.bin" "$M/a.bin" || fail "a.bin differs"
scrape "http://127.0.0.1:$mport/metrics" "$T/m.txt"
promtool check metrics <"$T/m.txt" || fail "promtool check metrics refuses the page"
[ "$(metric "$T/m.txt" ferry_fuse_read_bytes_total)" = $((2 << 20)) ] ||
	fail "ferry_fuse_read_bytes_total is $(metric "$T/m.txt" ferry_fuse_read_bytes_total)"
pid=$(daemon_of "$M" "$MOUNT_FERRY")
[ "$(daemon_listens "$pid")" = "$mport" ] ||
	fail "the daemon listens on '$(daemon_listens "$pid" | tr '\n' ' ')', want $mport alone"
ss -Hltn | awk '{ print $4 }' | grep -qx "127.0.0.1:$mport" ||
	fail "not listening on 127.0.0.1:$mport alone: $(ss -Hltn | grep ":$mport ")"

log "a second mount asking for the same port fails; the first one goes on serving"
mkdir -p "$T/mnt2"
expect_clean_failure "port of another ferry mount" "$T/mnt2" "$FERRY" mount \
	--cache-dir "$T/cache2" --metrics-addr "127.0.0.1:$mport" "$src" "$T/mnt2"
grep -q "Address already in use" "$T/.err" || fail "the line does not say so: $(cat "$T/.err")"
scrape "http://127.0.0.1:$mport/metrics" "$T/m.txt"

log "unmount stops the server: the daemon is gone and the port is free"
umount "$M" || fail "umount failed"
! is_mounted "$M" || fail "still mounted after umount"
for _ in $(seq 100); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
! kill -0 "$pid" 2>/dev/null || fail "the daemon still runs 10 s after umount"
# SO_REUSEADDR as ferry binds: the scrapes' connections may sit in TIME_WAIT, a listener may not.
"$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()' "$mport" || fail "port $mport is still listened on after the unmount"

if [ -e /proc/net/if_inet6 ] && grep -q ' lo$' /proc/net/if_inet6; then
	log "[::1]:PORT"
	mport=$(free_port)
	mount_ferry "$src" "$M" --chunk-size 1M --metrics-addr "[::1]:$mport"
	scrape "http://[::1]:$mport/metrics" "$T/m6.txt"
	promtool check metrics <"$T/m6.txt" || fail "promtool check metrics refuses the page"
	curl -s -m 5 -o /dev/null "http://127.0.0.1:$mport/metrics" &&
		fail "[::1]:$mport also answers on 127.0.0.1"
	umount_ferry "$M"
else
	log "no IPv6 loopback here: [::1] not tried"
fi
pass
