#!/usr/bin/env bash
# Bad shared-tier options at mount time: a --shared-cache that is not s3://BUCKET[/PREFIX]
# (http://, s3:// with no bucket, garbage, empty; also as shared_cache= through mount.ferry), a
# --shared-write-memory that is no size or outside 1M-64G, a
# bucket the tier does not have (404 NoSuchBucket) and a wrong secret (403) fail the mount with
# one line and a non-zero exit, leaving nothing mounted and no daemon behind, the secret never
# shown. An unreachable tier endpoint (a closed port) is not an error: the mount comes up with
# one warning line, tier_state "down", and serves the origin's bytes. The right options, given
# as -o shared_cache=,shared_endpoint=,shared_region= through mount.ferry, bring the tier up;
# the tier's user suspended while mounted (403s) makes it "denied", reads still right.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
tier_setup
[ -x "$MOUNT_FERRY" ] || fail "mount.ferry is not built at $MOUNT_FERRY"
src=$T/src
make_tree "$src" a.bin:3M b/c.bin:5000
origin_serve "$src"
M=$T/mnt
mkdir -p "$M"
secret=$AWS_SECRET_ACCESS_KEY
wrong=${secret%????}WXYZ

no_daemon_left() { # what
	if pgrep -f -- "$M" >/dev/null; then
		fail "$1: a process with the mountpoint in its arguments is still running"
	fi
}
bad_mount() { # description shared-cache-value [more options...]
	local desc=$1 value=$2
	shift 2
	expect_clean_failure "$desc" "$M" "$FERRY" mount --cache-dir "$T/cache" \
		--shared-cache "$value" --shared-endpoint "$S3_ENDPOINT" "$@" "$ORIGIN_URL" "$M"
	no_daemon_left "$desc"
}

for v in "http://127.0.0.1:1/tier/" "https://$S3_BUCKET/x/" "s3://" "s3:///prefix/" \
	"ferry-tier/prefix" "s3:/ferry-tier/x" "not a url at all" ""; do
	bad_mount "--shared-cache '$v'" "$v"
done
expect_clean_failure "shared_cache=ftp://x/ through mount.ferry" "$M" "$MOUNT_FERRY" \
	"$ORIGIN_URL" "$M" -o "cache_dir=$T/cache,shared_cache=ftp://x/,shared_endpoint=$S3_ENDPOINT"
no_daemon_left "shared_cache=ftp://x/"
for v in abc 0 512K 65G -1M; do
	bad_mount "--shared-write-memory '$v'" "s3://$TIER_BUCKET/p/" --shared-write-memory "$v"
done

bad_mount "a tier bucket that does not exist" s3://no-such-tier-bucket/p/
grep -qi "bucket" "$T/.err" || fail "a missing bucket: the line does not say so: $(cat "$T/.err")"

expect_clean_failure "a wrong secret for the tier (403)" "$M" env AWS_SECRET_ACCESS_KEY="$wrong" \
	"$FERRY" mount --cache-dir "$T/cache" --shared-cache "s3://$TIER_BUCKET/p/" \
	--shared-endpoint "$S3_ENDPOINT" "$ORIGIN_URL" "$M"
if grep -qF -e "$secret" -e "$wrong" "$T/.err" "$T/.out"; then
	fail "the wrong-secret message holds the secret"
fi
no_daemon_left "a wrong secret"

log "an unreachable tier endpoint: the mount comes up with one warning"
closed=$(free_port)
realpath -m "$M" >>"$T/.mounts"
rc=0
t0=$SECONDS
timeout 60 "$FERRY" mount --cache-dir "$T/cache" --shared-cache "s3://$TIER_BUCKET/p/" \
	--shared-endpoint "http://127.0.0.1:$closed" "$ORIGIN_URL" "$M" >"$T/.out" 2>"$T/.err" || rc=$?
[ "$rc" = 0 ] || { cat "$T/.err" >&2; fail "an unreachable tier failed the mount (rc $rc)"; }
is_mounted "$M" || fail "an unreachable tier: exit 0 but nothing is mounted"
nr_lines=$(grep -c . "$T/.err" || true)
[ "$nr_lines" = 1 ] || { cat "$T/.err" >&2; fail "an unreachable tier: $nr_lines lines, want one"; }
grep -q "warning: shared cache.*unreachable" "$T/.err" ||
	fail "an unreachable tier: not the documented warning: $(cat "$T/.err")"
echo "ok: an unreachable tier -> mounted in $((SECONDS - t0)) s: $(cat "$T/.err")"
[ "$(tier_stat "$M" tier_state)" = down ] ||
	fail "an unreachable tier: tier_state '$(tier_stat "$M" tier_state)', want 'down'"
same_tree "$src" "$M" >/dev/null || fail "an unreachable tier: bytes differ from the source"
[ "$(tier_stat "$M" tier_state)" = down ] || fail "an unreachable tier: tier_state left 'down'"
umount_ferry "$M"

log "the right options as -o through mount.ferry: the tier is up and used"
rm -rf "$T/cache"
timeout 60 "$MOUNT_FERRY" "$ORIGIN_URL" "$M" -o "cache_dir=$T/cache,chunk_size=1M,$(printf \
	'shared_cache=s3://%s/o/,shared_endpoint=%s,shared_region=us-east-1' "$TIER_BUCKET" \
	"$S3_ENDPOINT")" 2>"$T/.err" ||
	{ cat "$T/.err" >&2; fail "mount.ferry with shared_cache= failed"; }
[ ! -s "$T/.err" ] ||
	{ cat "$T/.err" >&2; fail "mount.ferry with good tier options said something"; }
is_mounted "$M" || fail "mount.ferry returned 0 but nothing is mounted"
same_tree "$src" "$M" >/dev/null || fail "-o shared_cache=: bytes differ from the source"
tier_wait_drained "$M"
read -r state puts < <(tier_stat "$M" tier_state tier_puts | paste -sd' ')
[ "$state" = up ] || fail "-o shared_cache=: tier_state '$state', want 'up'"
[ "$puts" = 4 ] || fail "-o shared_cache=: $puts chunks put into the tier, want 4 (1M chunks)"
umount_ferry "$M"

log "the tier's user suspended while mounted (403 on every request): 'denied', reads right"
mount_ferry "$ORIGIN_URL" "$M" --cache-dir "$T/cache2" --shared-cache "s3://$TIER_BUCKET/o/" \
	--shared-endpoint "$S3_ENDPOINT"
[ "$(tier_stat "$M" tier_state)" = up ] || fail "a fresh mount of a good tier is not 'up'"
radosgw-admin -c "$S3_STATE/ceph.conf" user suspend --uid ferry >/dev/null 2>&1 ||
	fail "radosgw-admin user suspend failed"
same_tree "$src" "$M" >/dev/null || fail "tier user suspended: bytes differ from the source"
read -r state hits < <(tier_stat "$M" tier_state tier_hits | paste -sd' ')
[ "$state" = denied ] || fail "tier user suspended: tier_state '$state' (hits $hits), want 'denied'"
log "tier_state denied, $hits hits, origin bytes right"
umount_ferry "$M"
pass
