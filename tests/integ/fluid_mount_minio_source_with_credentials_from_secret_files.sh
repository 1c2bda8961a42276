#!/usr/bin/env bash
# Fluid's MinIO sample with ferry: a config.json whose mountPoint is minio://BUCKET/PREFIX on
# minio-url (here radosgw on loopback) and whose credentials are the paths of the Secret's
# files, as Fluid mounts them (kubectl's --from-file keeps a trailing newline: one file has
# it). `ferry fluid-mount` reads them (AWS_* of this shell are unset first, and HOME has no
# ~/.aws), mounts, serves the uploaded bytes, and ends on SIGTERM with exit 0. A Secret holding
# a wrong key fails the mount in one line.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3
make_tree "$T/src" a.bin:2M sub/b.txt:777
s3_put_tree "$T/src" ds/ >/dev/null
mkdir -p "$T/secrets/minio-secret"
printf '%s\n' "$AWS_ACCESS_KEY_ID" >"$T/secrets/minio-secret/minio-access-key"
printf '%s' "$AWS_SECRET_ACCESS_KEY" >"$T/secrets/minio-secret/minio-access-secret"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
target=$T/runtime-mnt/thin/default/minio-demo/thin-fuse
echo "$target" >>"$T/.mounts"
config() { # the minio sample's config.json, on this endpoint and these secret files
	cat <<JSON
{"mounts":[{"mountPoint":"minio://$S3_BUCKET/ds","name":"minio","options":{"minio-access-key":"$T/secrets/minio-secret/minio-access-key","minio-access-secret":"$T/secrets/minio-secret/minio-access-secret","minio-url":"$S3_ENDPOINT"}}],"runtimeOptions":{"cache-dir":"$T/cache"},"targetPath":"$target","accessModes":["ReadOnlyMany"]}
JSON
}
config >"$T/config.json"

"$FERRY" fluid-mount --secrets-dir "$T/secrets" "$T/config.json" 2>"$T/fm.err" &
FM=$!
echo "$FM" >>"$T/.pids"
for _ in $(seq 300); do
	is_mounted "$target" && break
	kill -0 "$FM" 2>/dev/null || { cat "$T/fm.err" >&2; fail "fluid-mount exited before mounting"; }
	sleep 0.1
done
is_mounted "$target" || fail "no mount at $target after 30 s"
same_tree "$T/src" "$target"
log "ok: minio:// source mounted with the Secret's files"
kill -TERM "$FM"
rc=0
timeout 30 tail --pid="$FM" -f /dev/null || fail "fluid-mount still running 30 s after SIGTERM"
wait "$FM" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/fm.err" >&2; fail "fluid-mount exited $rc on SIGTERM"; }
is_mounted "$target" && fail "still mounted after SIGTERM"

# A wrong secret: the mount is refused in one line, nothing mounted.
printf 'not-the-secret\n' >"$T/secrets/minio-secret/minio-access-secret"
rm -rf "$T/cache"
expect_clean_failure "wrong secret" "$target" "$FERRY" fluid-mount --secrets-dir "$T/secrets" \
	"$T/config.json"
pass
