#!/usr/bin/env bash
# A mount with --metrics-addr serves /metrics while reads run: curl scrapes it again and again
# during a cold read (with a client that connected and never finished its request holding a
# connection the whole time), every page passes `promtool check metrics`, counters never go
# back, and the pages taken during the read saw it move. Once the reads are over the page says
# what `ferry stat --json` says, counter for counter; after a cold read of whole files the
# misses are their chunks and the bytes from the origin their sizes, after a warm one (page
# cache dropped) the hits grow, the bytes come from the local cache and the origin sees
# nothing; the histograms count every FUSE read and every origin request.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
need_fuse
need_cmd curl promtool
# Whole files, sizes beside the 1 MiB chunk boundaries: 25 + 4 + 1 chunks.
make_tree "$T/src" big.bin:25178457 mid.bin:3145729 small.bin:1000
sizes=$((25178457 + 3145729 + 1000))
chunks=$((25 + 4 + 1))
serve_nginx "$T/src"
mport=$(free_port)
url=http://127.0.0.1:$mport/metrics
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M --dir-readahead 0 \
	--metrics-addr "127.0.0.1:$mport"

log "a fresh mount: the page passes promtool and counts nothing yet"
scrape "$url" "$T/m0.txt"
promtool check metrics <"$T/m0.txt" || fail "promtool check metrics refuses the page"
for s in ferry_cache_hits_total ferry_cache_misses_total ferry_origin_bytes_total \
	ferry_fuse_reads_total ferry_origin_request_duration_seconds_count; do
	[ "$(metric "$T/m0.txt" "$s")" = 0 ] || fail "$s is $(metric "$T/m0.txt" "$s") before any read"
done

log "scrapes while a cold read runs (and a stalled client holds a connection)"
"$PY" -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.send(b"GET /metr")  # never finished
time.sleep(120)' "$mport" &
echo $! >>"$T/.pids"
# A reader slow enough to be seen: 1 MiB reads with a pause between them.
"$PY" - "$T/mnt" <<'PY' &
import os, sys, time
for name in ("big.bin", "mid.bin", "small.bin"):
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        while f.read(1 << 20):
            time.sleep(0.04)
PY
reader=$!
n=0
while kill -0 "$reader" 2>/dev/null; do
	scrape "$url" "$T/during.$n.txt"
	n=$((n + 1))
	sleep 0.05
done
wait "$reader" || fail "the reader failed"
[ "$n" -ge 3 ] || fail "only $n scrapes while the read ran"
scrape "$url" "$T/m1.txt"
log "$n scrapes during the read: each passes promtool, no counter goes back"
"$PY" - "$T"/during.*.txt "$T/m1.txt" <<'PY' || fail "the pages taken during the read are wrong"
import re, subprocess, sys
files = sorted(sys.argv[1:-1], key=lambda p: int(p.rsplit(".", 2)[-2])) + [sys.argv[-1]]
prev, seen, bad = {}, set(), []
for p in files:
    text = open(p).read()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                       capture_output=True)
    if r.returncode:
        bad.append("%s: promtool: %s" % (p, (r.stdout + r.stderr).strip()))
    types, cur = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split()
            types[name] = t
        elif line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            cur[name] = float(v)
    for name, v in cur.items():
        base = re.sub(r"\{.*", "", name)
        fam = re.sub(r"_(bucket|sum|count)$", "", base)
        if types.get(base) == "counter" or types.get(fam) == "histogram":
            if name in prev and v < prev[name]:
                bad.append("%s went back from %d to %d" % (name, prev[name], v))
    seen.add(cur.get("ferry_fuse_reads_total"))
    prev = cur
if len(seen) < 3:
    bad.append("the pages saw ferry_fuse_reads_total take only %d values (%s): not while "
               "the reads ran" % (len(seen), sorted(seen)))
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

log "after the cold read: the page says what ferry stat --json says"
same_as_stat "$T/m1.txt" "$T/mnt"
misses=$(metric "$T/m1.txt" ferry_cache_misses_total)
origin=$(metric "$T/m1.txt" ferry_origin_bytes_total)
requests=$(metric "$T/m1.txt" ferry_origin_requests_total)
[ "$misses" = "$chunks" ] || fail "cold: $misses misses, want $chunks (the files' chunks)"
[ "$origin" = "$sizes" ] || fail "cold: $origin bytes from the origin, want $sizes"
[ "$requests" = "$chunks" ] || fail "cold: $requests requests to the origin, want $chunks"
[ "$(metric "$T/m1.txt" ferry_origin_request_duration_seconds_count)" = "$requests" ] ||
	fail "cold: the origin request histogram counts $(metric "$T/m1.txt" \
		ferry_origin_request_duration_seconds_count), want $requests"
reads1=$(metric "$T/m1.txt" ferry_fuse_reads_total)
[ "$(metric "$T/m1.txt" ferry_fuse_read_duration_seconds_count)" = "$reads1" ] ||
	fail "cold: the FUSE read histogram counts $(metric "$T/m1.txt" \
		ferry_fuse_read_duration_seconds_count), ferry_fuse_reads_total $reads1"
[ "$(metric "$T/m1.txt" ferry_fuse_read_bytes_total)" = "$sizes" ] ||
	fail "cold: $(metric "$T/m1.txt" ferry_fuse_read_bytes_total) bytes read, want $sizes"
hits1=$(metric "$T/m1.txt" ferry_cache_hits_total)
cache_bytes1=$(metric "$T/m1.txt" ferry_cache_read_bytes_total)
[ "$(metric "$T/m1.txt" ferry_cache_chunks)" = "$chunks" ] ||
	fail "cold: $(metric "$T/m1.txt" ferry_cache_chunks) chunks cached, want $chunks"
sum1=$(metric "$T/m1.txt" ferry_fuse_read_duration_seconds_sum)

log "a warm read (page cache dropped): hits, bytes from the local cache, nothing from the origin"
drop_caches
cat "$T/mnt/big.bin" "$T/mnt/mid.bin" "$T/mnt/small.bin" | cmp - <(cat "$T/src/big.bin" \
	"$T/src/mid.bin" "$T/src/small.bin") || fail "the warm read differs from the source"
scrape "$url" "$T/m2.txt"
promtool check metrics <"$T/m2.txt" || fail "promtool check metrics refuses the page"
same_as_stat "$T/m2.txt" "$T/mnt"
[ "$(metric "$T/m2.txt" ferry_cache_misses_total)" = "$misses" ] ||
	fail "warm: misses went from $misses to $(metric "$T/m2.txt" ferry_cache_misses_total)"
[ "$(metric "$T/m2.txt" ferry_origin_bytes_total)" = "$origin" ] ||
	fail "warm: bytes from the origin went from $origin to $(metric "$T/m2.txt" ferry_origin_bytes_total)"
[ "$(metric "$T/m2.txt" ferry_origin_requests_total)" = "$requests" ] ||
	fail "warm: requests to the origin went from $requests to $(metric "$T/m2.txt" ferry_origin_requests_total)"
hits2=$(metric "$T/m2.txt" ferry_cache_hits_total)
[ "$((hits2 - hits1))" -ge "$chunks" ] ||
	fail "warm: $((hits2 - hits1)) hits, want at least $chunks (every chunk read again)"
cache_bytes2=$(metric "$T/m2.txt" ferry_cache_read_bytes_total)
[ "$((cache_bytes2 - cache_bytes1))" = "$sizes" ] ||
	fail "warm: $((cache_bytes2 - cache_bytes1)) bytes from the local cache, want $sizes"
reads2=$(metric "$T/m2.txt" ferry_fuse_reads_total)
[ "$reads2" -gt "$reads1" ] || fail "warm: no FUSE reads counted"
[ "$(metric "$T/m2.txt" ferry_fuse_read_duration_seconds_count)" = "$reads2" ] ||
	fail "warm: the FUSE read histogram counts $(metric "$T/m2.txt" \
		ferry_fuse_read_duration_seconds_count), ferry_fuse_reads_total $reads2"
"$PY" -c 'import sys; sys.exit(not float(sys.argv[2]) > float(sys.argv[1]))' "$sum1" \
	"$(metric "$T/m2.txt" ferry_fuse_read_duration_seconds_sum)" ||
	fail "warm: the FUSE read histogram's sum did not grow"
[ "$(metric "$T/m2.txt" 'ferry_tier_state{state="off"}')" = 1 ] || fail "no tier, yet not off"

log "the page is only at /metrics, and only GET and HEAD"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/")" = 404 ] ||
	fail "/ is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url")" = 405 ] || fail "POST is not 405"
umount_ferry "$T/mnt"
pass "$n scrapes during a cold read; cold: $misses misses, $origin bytes from the origin; \
warm: $((hits2 - hits1)) hits, $((cache_bytes2 - cache_bytes1)) bytes from the cache"
