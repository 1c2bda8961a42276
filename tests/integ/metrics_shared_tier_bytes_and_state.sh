#!/usr/bin/env bash
# The shared tier's metrics on two mounts of one nginx origin sharing a tier (radosgw): A reads
# a file cold (its chunks from the origin, then PUT to the tier: `ferry warm` waits until they
# are there), B reads it from the tier. Each page says the tier is up, equals `ferry stat
# --json` and passes promtool; A counts the file's chunks and bytes as PUT, B as tier hits and
# tier bytes with nothing from the origin, though both missed every chunk in their own cache.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
need_fuse
need_s3
need_cmd curl promtool
serve_s3
size=$((6 * 1048576 + 4321))
chunks=7
make_tree "$T/src" big.bin:$size
serve_nginx "$T/src"
src="http://127.0.0.1:$PORT/"
tier=(--shared-cache "s3://$S3_BUCKET/tier/" --shared-endpoint "$S3_ENDPOINT")
pa=$(free_port)
pb=$(free_port)

log "A: cold read from the origin, chunks PUT to the tier"
mount_ferry "$src" "$T/a" --cache-dir "$T/cache-a" --chunk-size 1M --dir-readahead 0 \
	--metrics-addr "127.0.0.1:$pa" "${tier[@]}"
cmp "$T/src/big.bin" "$T/a/big.bin" || fail "A: big.bin differs"
timeout 120 "$FERRY" warm "$T/a" 2>"$T/warm.err" || { cat "$T/warm.err" >&2; fail "ferry warm failed"; }
scrape "http://127.0.0.1:$pa/metrics" "$T/a.txt"
promtool check metrics <"$T/a.txt" || fail "A: promtool check metrics refuses the page"
same_as_stat "$T/a.txt" "$T/a"
[ "$(metric "$T/a.txt" 'ferry_tier_state{state="up"}')" = 1 ] || fail "A: the tier is not up"
[ "$(metric "$T/a.txt" 'ferry_tier_state{state="off"}')" = 0 ] || fail "A: the tier is also off"
[ "$(metric "$T/a.txt" ferry_origin_bytes_total)" = "$size" ] ||
	fail "A: $(metric "$T/a.txt" ferry_origin_bytes_total) bytes from the origin, want $size"
[ "$(metric "$T/a.txt" ferry_tier_puts_total)" = "$chunks" ] ||
	fail "A: $(metric "$T/a.txt" ferry_tier_puts_total) tier PUTs, want $chunks"
[ "$(metric "$T/a.txt" ferry_tier_put_bytes_total)" = "$size" ] ||
	fail "A: $(metric "$T/a.txt" ferry_tier_put_bytes_total) bytes PUT, want $size"
[ "$(metric "$T/a.txt" ferry_tier_puts_dropped_total)" = 0 ] || fail "A: tier writes dropped"
[ "$(metric "$T/a.txt" ferry_tier_put_queue_chunks)" = 0 ] || fail "A: PUTs still queued"
[ "$(metric "$T/a.txt" ferry_tier_bytes_total)" = 0 ] || fail "A: bytes from an empty tier"

log "B: the same file from the tier"
mount_ferry "$src" "$T/b" --cache-dir "$T/cache-b" --chunk-size 1M --dir-readahead 0 \
	--metrics-addr "127.0.0.1:$pb" "${tier[@]}"
cmp "$T/src/big.bin" "$T/b/big.bin" || fail "B: big.bin differs"
scrape "http://127.0.0.1:$pb/metrics" "$T/b.txt"
promtool check metrics <"$T/b.txt" || fail "B: promtool check metrics refuses the page"
same_as_stat "$T/b.txt" "$T/b"
[ "$(metric "$T/b.txt" 'ferry_tier_state{state="up"}')" = 1 ] || fail "B: the tier is not up"
[ "$(metric "$T/b.txt" ferry_cache_misses_total)" = "$chunks" ] ||
	fail "B: $(metric "$T/b.txt" ferry_cache_misses_total) misses, want $chunks"
[ "$(metric "$T/b.txt" ferry_tier_hits_total)" = "$chunks" ] ||
	fail "B: $(metric "$T/b.txt" ferry_tier_hits_total) tier hits, want $chunks"
[ "$(metric "$T/b.txt" ferry_tier_bytes_total)" = "$size" ] ||
	fail "B: $(metric "$T/b.txt" ferry_tier_bytes_total) bytes from the tier, want $size"
[ "$(metric "$T/b.txt" ferry_origin_bytes_total)" = 0 ] ||
	fail "B: $(metric "$T/b.txt" ferry_origin_bytes_total) bytes from the origin, want 0"
[ "$(metric "$T/b.txt" ferry_origin_requests_total)" = 0 ] || fail "B: requests to the origin"
umount_ferry "$T/b"
umount_ferry "$T/a"
pass "A: $chunks chunks PUT; B: $chunks tier hits, $size bytes from the tier"
