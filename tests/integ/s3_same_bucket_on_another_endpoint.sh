#!/usr/bin/env bash
# The same bucket and prefix on two S3 servers (two radosgw on loopback, A and B, holding
# different bytes under the same names and sizes), mounted one after the other on one
# --cache-dir: each endpoint is its own cache. B serves B's bytes; a third endpoint that is
# unreachable does not come up "offline" with what A or B cached (it fails with one line);
# with A down, a remount through A serves A's cached bytes, never B's; the same for B.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3

S3B_STATE=
# s3_lib.sh stops server A; server B goes first, after the mounts.
eval "s3lib_cleanup() $(declare -f cleanup | tail -n +2)"
cleanup() {
	local rc=$?
	set +e
	if [ -n "$S3B_STATE" ]; then
		while read -r m; do
			fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		done < <(mounts_under "$T" | sort -r)
		bash "$S3SERVER_SH" stop "$S3B_STATE" 2>/dev/null
	fi
	(exit "$rc")
	s3lib_cleanup
}

serve_s3
A=$S3_ENDPOINT
S3B_STATE=$T/s3b
B=$(bash "$S3SERVER_SH" start "$S3B_STATE" "$S3_BUCKET") || fail "the second radosgw did not start"
[ "$A" != "$B" ] || fail "both servers on $A"
log "A at $A, B at $B"

# Same names and sizes, other bytes on B.
make_tree "$T/srcA" x.bin:2M y.bin:700K sub/z.bin:1M
"$PY" - "$T/srcA" "$T/srcB" <<'PY'
import os, random, sys
a, b = sys.argv[1], sys.argv[2]
rng = random.Random("B")
for d, _, fs in os.walk(a):
    for n in fs:
        p = os.path.join(b, os.path.relpath(os.path.join(d, n), a))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").write(rng.randbytes(os.path.getsize(os.path.join(d, n))))
PY
cmp -s "$T/srcA/x.bin" "$T/srcB/x.bin" && fail "A and B hold the same bytes"
[ "$(S3_ENDPOINT=$A s3_put_tree "$T/srcA" ds/)" = 3 ] || fail "upload to A"
[ "$(S3_ENDPOINT=$B s3_put_tree "$T/srcB" ds/)" = 3 ] || fail "upload to B"
names=(x.bin y.bin sub/z.bin)
s3opts=(--region us-east-1 --addressing path --chunk-size 1M)

log "through A, then through B, on one cache dir"
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$A" "${s3opts[@]}"
reads_right_or_eio "$T/srcA" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$B" "${s3opts[@]}"
reads_right_or_eio "$T/srcB" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"

log "through a third endpoint that does not answer"
dead=http://127.0.0.1:$(free_port)
mkdir -p "$T/mnt"
echo "$T/mnt" >>"$T/.mounts"
expect_clean_failure "mount through unreachable $dead" "$T/mnt" \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$dead" "${s3opts[@]}" \
	"s3://$S3_BUCKET/ds/" "$T/mnt"

log "A down: a remount through A serves A's cached bytes"
bash "$S3SERVER_SH" stop "$S3_STATE" || fail "cannot stop A"
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$A" "${s3opts[@]}"
grep -q offline "$T/.mount.err" || fail "the mount through A (down) did not say offline"
reads_right_or_eio "$T/srcA" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"

log "B down: a remount through B serves B's cached bytes"
bash "$S3SERVER_SH" stop "$S3B_STATE" || fail "cannot stop B"
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$B" "${s3opts[@]}"
grep -q offline "$T/.mount.err" || fail "the mount through B (down) did not say offline"
reads_right_or_eio "$T/srcB" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"
pass
