#!/usr/bin/env bash
# Failed requests to the origin are counted by class in ferry_origin_errors_total{class=...},
# and the requests, retries and failures agree with what the server saw: a faultserver answers
# every second chunk GET with 500 (retried: the reads succeed), then every GET of another file
# with 204 (not data: retried, then the read fails with EIO). The page equals `ferry stat
# --json` after each, passes promtool, and the origin request histogram counts every request.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
need_fuse
need_cmd curl promtool
make_tree "$T/src" first.bin:1M five.bin:5M bad.bin:100K
start_faultserver "$T/src"
mport=$(free_port)
url=http://127.0.0.1:$mport/metrics
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --dir-readahead 0 \
	--metrics-addr "127.0.0.1:$mport"
check_reads "$T/src" "$T/mnt" --all-ok first.bin >/dev/null || fail "first.bin: see above"
# Opened before the faults: their opens ask nothing more of the server.
exec 3<"$T/mnt/five.bin" 4<"$T/mnt/bad.bin"
scrape "$url" "$T/m0.txt"

# delta FILE_BEFORE FILE_AFTER SAMPLE: how much SAMPLE grew.
delta() {
	echo $(($(metric "$2" "$3") - $(metric "$1" "$3")))
}

log "every second chunk GET answered 500"
fault_set "mode=500&every=2"
check_reads "$T/src" "$T/mnt" --all-ok five.bin || fail "five.bin: see above"
gets=$(fault_count)
faulted=$(fault_count_faulted)
scrape "$url" "$T/m1.txt"
promtool check metrics <"$T/m1.txt" || fail "promtool check metrics refuses the page"
same_as_stat "$T/m1.txt" "$T/mnt"
[ "$faulted" -gt 0 ] || fail "the server faulted nothing"
[ "$(delta "$T/m0.txt" "$T/m1.txt" ferry_origin_requests_total)" = "$gets" ] ||
	fail "500s: $(delta "$T/m0.txt" "$T/m1.txt" ferry_origin_requests_total) requests counted, the server saw $gets"
[ "$(delta "$T/m0.txt" "$T/m1.txt" 'ferry_origin_errors_total{class="http_5xx"}')" = "$faulted" ] ||
	fail "500s: $(delta "$T/m0.txt" "$T/m1.txt" 'ferry_origin_errors_total{class="http_5xx"}') http_5xx errors counted, the server sent $faulted"
[ "$(delta "$T/m0.txt" "$T/m1.txt" ferry_origin_retries_total)" = "$faulted" ] ||
	fail "500s: $(delta "$T/m0.txt" "$T/m1.txt" ferry_origin_retries_total) retries, want $faulted"
[ "$(metric "$T/m1.txt" ferry_fetch_failures_total)" = 0 ] || fail "500s: a fetch failed for good"
[ "$(metric "$T/m1.txt" ferry_origin_bytes_total)" = $((6 << 20)) ] ||
	fail "500s: $(metric "$T/m1.txt" ferry_origin_bytes_total) bytes from the origin, want 6 MiB"

log "every GET of bad.bin answered 204: retried, then EIO"
fault_set "mode=204&every=1"
"$PY" -c '
import os, sys
try:
    os.pread(int(sys.argv[1]), 4096, 0)
except OSError as e:
    sys.exit(0 if e.errno == 5 else "want EIO, got %s" % e)
sys.exit("the read of bad.bin succeeded")' 4 || fail "bad.bin: see above"
gets=$(fault_count)
scrape "$url" "$T/m2.txt"
promtool check metrics <"$T/m2.txt" || fail "promtool check metrics refuses the page"
same_as_stat "$T/m2.txt" "$T/mnt"
failures=$(delta "$T/m1.txt" "$T/m2.txt" ferry_fetch_failures_total)
[ "$failures" -ge 1 ] || fail "204s: no fetch failure counted"
[ "$(delta "$T/m1.txt" "$T/m2.txt" ferry_origin_requests_total)" = "$gets" ] ||
	fail "204s: $(delta "$T/m1.txt" "$T/m2.txt" ferry_origin_requests_total) requests counted, the server saw $gets"
[ "$(delta "$T/m1.txt" "$T/m2.txt" 'ferry_origin_errors_total{class="bad_response"}')" = "$gets" ] ||
	fail "204s: $(delta "$T/m1.txt" "$T/m2.txt" 'ferry_origin_errors_total{class="bad_response"}') bad_response errors, want $gets"
# Each failed fetch is 1 request and 5 retries.
[ "$gets" = $((6 * failures)) ] || fail "204s: $gets requests for $failures failed fetches, want 6 each"
[ "$(delta "$T/m1.txt" "$T/m2.txt" ferry_origin_retries_total)" = $((5 * failures)) ] ||
	fail "204s: $(delta "$T/m1.txt" "$T/m2.txt" ferry_origin_retries_total) retries for $failures failed fetches"
[ "$(delta "$T/m1.txt" "$T/m2.txt" ferry_fuse_read_errors_total)" -ge 1 ] || fail "204s: no read error counted"
exec 3<&- 4<&-

log "no other class moved; the histogram counted every request"
"$PY" - "$T/m2.txt" <<'PY' || fail "other classes counted"
import sys
bad = []
for line in open(sys.argv[1]):
    if line.startswith("ferry_origin_errors_total{"):
        name, _, v = line.rpartition(" ")
        if float(v) and 'class="http_5xx"' not in name and 'class="bad_response"' not in name:
            bad.append(line.strip())
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
requests=$(metric "$T/m2.txt" ferry_origin_requests_total)
[ "$(metric "$T/m2.txt" ferry_origin_request_duration_seconds_count)" = "$requests" ] ||
	fail "the origin request histogram counts $(metric "$T/m2.txt" \
		ferry_origin_request_duration_seconds_count), ferry_origin_requests_total $requests"
umount_ferry "$T/mnt"
pass "500s: $faulted of the GETs, counted and retried; 204s: $failures failed fetches of 6 requests"
