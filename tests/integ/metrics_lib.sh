# shellcheck shell=bash
# Helpers of the metrics_*.sh tests (--metrics-addr), sourced after lib.sh.
#   scrape URL FILE          GET URL (the /metrics page) into FILE; fails the test unless 200
#   metric FILE NAME         prints the value of the sample NAME (with its labels, if any:
#                            'ferry_origin_errors_total{class="timeout"}') in FILE
#   same_as_stat FILE MNT    every counter and gauge that `ferry stat --json` also reports
#                            has the same value in FILE (a scrape taken while nothing moves)
# A build without the metrics server (-Dmetrics=disabled, or no libmicrohttpd) SKIPs them.

build_has METRICS || skip "this build has no metrics server (-Dmetrics=disabled or no libmicrohttpd)"

scrape() { # url file
	local code
	code=$(curl -s -m 10 -o "$2" -w '%{http_code}' "$1") || fail "curl $1 failed"
	[ "$code" = 200 ] || fail "GET $1 answered $code"
}

metric() { # file name
	"$PY" - "$1" "$2" <<'PY'
import sys
want = sys.argv[2]
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    name, _, value = line.rstrip("\n").rpartition(" ")
    if name == want:
        v = float(value)
        print(int(v) if v == int(v) else v)
        sys.exit(0)
sys.exit("no sample %s in %s" % (want, sys.argv[1]))
PY
}

# The pairs: `ferry stat --json` key, metric sample. docs/ferry.md (Metrics) lists them.
STAT_METRIC_PAIRS=(
	hits:ferry_cache_hits_total
	misses:ferry_cache_misses_total
	cache_read_bytes:ferry_cache_read_bytes_total
	evictions:ferry_cache_evictions_total
	verify_failures:ferry_cache_verify_failures_total
	disk_errors:ferry_cache_disk_errors_total
	cache_used_bytes:ferry_cache_used_bytes
	cache_max_bytes:ferry_cache_limit_bytes
	chunk_bytes:ferry_cache_chunk_size_bytes
	nr_objects:ferry_cache_objects
	nr_chunks:ferry_cache_chunks
	bytes_fetched:ferry_origin_bytes_total
	requests:ferry_origin_requests_total
	retries:ferry_origin_retries_total
	fetch_errors:ferry_fetch_failures_total
	chunks_in_flight:ferry_fetch_chunks_in_flight
	reads:ferry_fuse_reads_total
	read_bytes:ferry_fuse_read_bytes_total
	read_errors:ferry_fuse_read_errors_total
	dir_readahead_files:ferry_dir_readahead_files_total
	tier_hits:ferry_tier_hits_total
	tier_bytes:ferry_tier_bytes_total
	tier_misses:ferry_tier_misses_total
	tier_rejected:ferry_tier_rejected_total
	tier_errors:ferry_tier_errors_total
	tier_puts:ferry_tier_puts_total
	tier_put_bytes:ferry_tier_put_bytes_total
	tier_puts_dropped:ferry_tier_puts_dropped_total
	tier_put_queued:ferry_tier_put_queue_chunks
)

same_as_stat() { # file mountpoint
	timeout 30 "$FERRY" stat --json "$2" >"$T/.stat.json" || fail "ferry stat --json $2 failed"
	"$PY" - "$1" "$T/.stat.json" "${STAT_METRIC_PAIRS[@]}" <<'PY' || fail "metrics differ from ferry stat --json"
import json, sys
samples = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    name, _, value = line.rstrip("\n").rpartition(" ")
    samples[name] = float(value)
st = json.load(open(sys.argv[2]))
bad = []
for pair in sys.argv[3:]:
    key, name = pair.split(":")
    if key not in st:
        bad.append("ferry stat --json has no %s" % key)
    elif name not in samples:
        bad.append("the metrics have no %s" % name)
    elif float(st[key]) != samples[name]:
        bad.append("%s %s but %s %s" % (key, st[key], name, int(samples[name])))
for state in ("off", "up", "down", "denied"):
    v = samples.get('ferry_tier_state{state="%s"}' % state)
    if v != (1.0 if st["tier_state"] == state else 0.0):
        bad.append("tier_state %s but ferry_tier_state{state=\"%s\"} %s" % (st["tier_state"], state, v))
if samples.get("ferry_cache_degraded") != (1.0 if st["degraded"] else 0.0):
    bad.append("degraded %s but ferry_cache_degraded %s" % (st["degraded"], samples.get("ferry_cache_degraded")))
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}
