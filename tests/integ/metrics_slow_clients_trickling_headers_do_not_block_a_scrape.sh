#!/usr/bin/env bash
# Clients that open connections to the metrics server and trickle one header line every half
# second, never ending their request, and reconnect as soon as they are cut off (a slowloris;
# any local user can do it), do not block scrapes: with more of them than the server has
# connection slots (16), a scrape is still answered within a few seconds, each time, while
# they run; FUSE reads go on. Before the per-request deadline they held every slot for ever
# (MHD's timeout only closes a connection that sends nothing) and every scrape hung.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
need_fuse
need_cmd curl
make_tree "$T/src" a.bin:2M
serve_nginx "$T/src"
mport=$(free_port)
url=http://127.0.0.1:$mport/metrics
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M --metrics-addr "127.0.0.1:$mport"
scrape "$url" "$T/m0.txt"

NR_SLOW=24
RUN_S=14
log "$NR_SLOW slow clients trickle headers for $RUN_S s"
"$PY" - "$mport" "$NR_SLOW" "$RUN_S" "$T/slow.count" <<'PY' &
import socket, sys, threading, time
port, n, run_s, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
end = time.monotonic() + run_s
conns = [0]
lock = threading.Lock()
def slow():
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            with lock:
                conns[0] += 1
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < end:
                time.sleep(0.5)
                s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            pass
        finally:
            try:
                s.close()
            except Exception:
                pass
ts = [threading.Thread(target=slow) for _ in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
open(out, "w").write("%d\n" % conns[0])
PY
slow_pid=$!
on_exit "kill $slow_pid 2>/dev/null; wait $slow_pid 2>/dev/null"
sleep 2 # every slot taken, the rest in the backlog
for i in 1 2 3; do
	t0=$(date +%s%N)
	code=$(curl -s -m 8 -o "$T/m$i.txt" -w '%{http_code}' "$url") ||
		fail "scrape $i under $NR_SLOW slow clients: no answer (curl exit $?; -m 8)"
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$code" = 200 ] || fail "scrape $i under $NR_SLOW slow clients answered $code"
	log "scrape $i answered in $ms ms"
	[ "$ms" -le 4000 ] || fail "scrape $i took $ms ms under slow clients (limit 4000)"
	metric "$T/m$i.txt" ferry_uptime_seconds >/dev/null || fail "scrape $i: not the page"
	cmp -s "$T/src/a.bin" "$T/mnt/a.bin" || fail "a.bin read wrong under slow clients"
	sleep 1
done
wait $slow_pid || fail "the slow clients failed"
count=$(cat "$T/slow.count")
log "the slow clients opened $count connections"
# Each was cut off after its deadline and came back: far more than 24 connections in 14 s.
[ "$count" -gt "$NR_SLOW" ] || fail "the slow clients were never cut off ($count connections)"
scrape "$url" "$T/m9.txt"
pass
