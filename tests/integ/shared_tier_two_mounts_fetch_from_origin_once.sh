#!/usr/bin/env bash
# Two mounts of one HTTP origin (nginx) with their own cache directories and one shared chunk
# tier (radosgw): A reads the dataset (a 20 MiB file and 50 small files) and its chunks go to
# the tier (`ferry warm`, which returns once A's PUT queue has drained), then B (mounted by
# mount.ferry with the fstab options shared_cache= and shared_endpoint=) reads the same. Every byte equals the source,
# the origin sent the dataset's bytes once (nginx's access log: body bytes of GETs of files,
# listings left out, at most 1.05 x the dataset), and B got its chunks from the tier.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3
make_tree "$T/src" big.bin:20M
many_files "$T/src/small" 50 200000
serve_nginx "$T/src"
src="http://127.0.0.1:$PORT/"
tier=(--shared-cache "s3://$S3_BUCKET/tier/" --shared-endpoint "$S3_ENDPOINT")
dataset=$(find "$T/src" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')

mount_ferry "$src" "$T/a" --cache-dir "$T/cache-a" "${tier[@]}"
[ "$(stat_json "$T/a" tier_state)" = up ] || fail "mount A: tier state is not up"
timeout 120 "$FERRY" warm "$T/a" 2>"$T/warm.err" || { cat "$T/warm.err" >&2; fail "ferry warm failed"; }
grep -q "shared tier up: 0 writes dropped" "$T/warm.err" || { cat "$T/warm.err" >&2; fail "ferry warm did not report the tier's writes"; }
queued=$(stat_json "$T/a" tier_put_queued)
[ "$queued" = 0 ] || fail "ferry warm returned with $queued chunks still queued for the tier"
same_tree "$T/src" "$T/a" || fail "mount A: bytes differ from the source"
puts=$(stat_json "$T/a" tier_puts)
dropped=$(stat_json "$T/a" tier_puts_dropped)
log "A: $puts tier puts, $dropped dropped"
[ "$puts" -gt 0 ] || fail "mount A put nothing into the tier"
[ "$dropped" -eq 0 ] || fail "mount A dropped $dropped tier puts"

mkdir -p "$T/b"
echo "$T/b" >>"$T/.mounts"
timeout 60 "$MOUNT_FERRY" "$src" "$T/b" \
	-o "ro,cache_dir=$T/cache-b,shared_cache=s3://$S3_BUCKET/tier/,shared_endpoint=$S3_ENDPOINT" ||
	fail "mount.ferry with shared_cache= failed"
[ "$(stat_json "$T/b" tier_state)" = up ] || fail "mount B: tier state is not up"
same_tree "$T/src" "$T/b" || fail "mount B: bytes differ from the source"
hits=$(stat_json "$T/b" tier_hits)
rejected=$(stat_json "$T/b" tier_rejected)
b_origin=$(stat_json "$T/b" bytes_fetched)
log "B: $hits tier hits, $rejected rejected, $b_origin bytes from the origin"
[ "$hits" -gt 0 ] || fail "mount B had no tier hits"
[ "$rejected" -eq 0 ] || fail "mount B rejected $rejected tier objects"

# Body bytes nginx sent for GETs of files (a URI ending in / is a listing).
origin=$(awk '{ m = $6; gsub(/"/, "", m) } m == "GET" && $7 !~ /\/$/ && $9 ~ /^2/ { n += $10 }
	END { print n + 0 }' "$NGINX_STATE/access.log")
log "origin sent $origin bytes for a dataset of $dataset bytes (ratio $(
	awk -v o="$origin" -v d="$dataset" 'BEGIN { printf "%.3f", o / d }'))"
awk -v o="$origin" -v d="$dataset" 'BEGIN { exit !(o <= 1.05 * d) }' ||
	fail "the origin sent $origin bytes for a dataset of $dataset: more than 1.05 x"
umount_ferry "$T/b"
umount_ferry "$T/a"
pass
