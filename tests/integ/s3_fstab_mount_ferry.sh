#!/usr/bin/env bash
# mount.ferry as mount(8) calls it for an fstab line with an S3 source
#   s3://bucket/prefix /mnt/ds ferry ro,_netdev,endpoint=URL,region=R,profile=P,addressing=path 0 0
# credentials from a profile of ~/.aws/credentials (nothing in the environment), then an
# anonymous mount (no_sign_request) of a public-read prefix; bad S3 options fail cleanly.
# Then through mount(8) itself (see fstab_leg in lib.sh).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
[ -x "$MOUNT_FERRY" ] || fail "mount.ferry is not built at $MOUNT_FERRY"
serve_s3
make_tree "$T/src" ds/a.bin:2M ds/sub/b.bin:33K 'ds/sub/c d+e.bin:1'
s3_put_tree "$T/src/ds" ds/ >/dev/null
# A second bucket, public-read, and its objects too; the first stays private.
S3_BUCKET=ferry-public s3_py 's3.create_bucket(Bucket=bucket, ACL="public-read")'
S3_BUCKET=ferry-public s3_put_tree "$T/src/ds" pub/ >/dev/null
S3_BUCKET=ferry-public s3_py '
for o in s3.list_objects_v2(Bucket=bucket, Prefix="pub/")["Contents"]:
    s3.put_object_acl(Bucket=bucket, Key=o["Key"], ACL="public-read")
'
M=$T/mnt
mkdir -p "$M"
echo "$M" >>"$T/.mounts"

# Credentials only in a profile; mount(8) runs helpers with a clean environment.
mkdir -p "$HOME/.aws"
printf '[rgw]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
	"$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$HOME/.aws/credentials"
chmod 600 "$HOME/.aws/credentials"
run=(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_ENDPOINT_URL)
opts="ro,_netdev,cache_dir=$T/fscache,chunk_size=1M,endpoint=$S3_ENDPOINT,region=us-east-1"
opts+=",profile=rgw,addressing=path"

log "a profile's credentials, from -o options"
timeout 60 "${run[@]}" "$MOUNT_FERRY" "s3://$S3_BUCKET/ds/" "$M" -o "$opts" || fail "mount.ferry failed"
is_mounted "$M" || fail "mount.ferry returned 0 but nothing is mounted"
same_tree "$T/src/ds" "$M"
[ "$(disk_used_bytes "$T/fscache")" -gt $((2 << 20)) ] || fail "cache_dir= was not used"
umount "$M" || fail "umount of a mount.ferry mount failed"
! is_mounted "$M" || fail "still mounted after umount"

log "anonymous, no_sign_request, a public-read prefix"
timeout 60 "${run[@]}" "$MOUNT_FERRY" "s3://ferry-public/pub" "$M" -n \
	-o "ro,nosuid,nodev,cache_dir=$T/fscache,endpoint=$S3_ENDPOINT,addressing=path,no_sign_request" ||
	fail "anonymous mount.ferry failed"
same_tree "$T/src/ds" "$M"
umount "$M"

log "anonymous on the private prefix is access denied"
expect_clean_failure "anonymous, private prefix" "$M" "${run[@]}" "$MOUNT_FERRY" "s3://$S3_BUCKET/ds/" "$M" \
	-o "cache_dir=$T/fscache-fresh,endpoint=$S3_ENDPOINT,addressing=path,no_sign_request"
grep -q "access denied" "$T/.err" || fail "anonymous on a private prefix: $(cat "$T/.err")"
expect_clean_failure "unknown profile" "$M" "${run[@]}" "$MOUNT_FERRY" "s3://$S3_BUCKET/ds/" "$M" \
	-o "cache_dir=$T/fscache-fresh,endpoint=$S3_ENDPOINT,profile=nosuch"
expect_clean_failure "bad addressing" "$M" "${run[@]}" "$MOUNT_FERRY" "s3://$S3_BUCKET/ds/" "$M" \
	-o "cache_dir=$T/fscache-fresh,endpoint=$S3_ENDPOINT,profile=rgw,addressing=sideways"
expect_clean_failure "bad endpoint" "$M" "${run[@]}" "$MOUNT_FERRY" "s3://$S3_BUCKET/ds/" "$M" \
	-o "cache_dir=$T/fscache-fresh,endpoint=ftp://127.0.0.1,profile=rgw"

printf '%s %s ferry %s 0 0\n' "s3://$S3_BUCKET/ds/" "$M" "$opts" >"$T/fstab"
# mount(8) runs mount.ferry without HOME: ~ would be root's home from passwd, not this test's.
fstab_leg "$T/fstab" "$M" "$T/src/ds" sub/b.bin "${run[@]}" \
	AWS_SHARED_CREDENTIALS_FILE="$HOME/.aws/credentials"
pass
