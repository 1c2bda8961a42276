#!/usr/bin/env bash
# The cache identity of an S3 source holds the endpoint: after the bucket/prefix was read on
# one endpoint, the same s3://bucket/prefix on another, unreachable endpoint must fail to
# mount (it has no cache of its own), never come up "offline" serving the first endpoint's
# bytes. The same endpoint, down, still comes up offline with what it cached.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3

make_tree "$T/src" a.bin:1500K sub/b.bin:700K
nr=$(s3_put_tree "$T/src" ds/)
[ "$nr" = 2 ] || fail "uploaded $nr of 2 files"
opts=(--region us-east-1 --addressing path --chunk-size 1M)
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$S3_ENDPOINT" "${opts[@]}"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"

dead="http://127.0.0.1:$(free_port)"
log "the same prefix on an unreachable endpoint ($dead)"
mkdir -p "$T/mnt"
if timeout 60 "$FERRY" mount --cache-dir "$T/cache" --endpoint "$dead" "${opts[@]}" \
	"s3://$S3_BUCKET/ds/" "$T/mnt" 2>"$T/err"; then
	echo "$T/mnt" >>"$T/.mounts"
	fail "came up with another endpoint's cache: $(cat "$T/err"); $(ls "$T/mnt")"
fi
! is_mounted "$T/mnt" || fail "something is mounted after a failed mount"
grep -q offline "$T/err" && fail "it says offline: $(cat "$T/err")"
grep -q "127.0.0.1" "$T/err" || fail "the error does not name the endpoint: $(cat "$T/err")"

log "the first endpoint, down: offline with its own cache"
bash "$S3SERVER_SH" stop "$S3_STATE"
mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$S3_ENDPOINT" "${opts[@]}"
grep -q offline "$T/.mount.err" || fail "not offline: $(cat "$T/.mount.err")"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
pass
