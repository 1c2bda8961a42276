#!/usr/bin/env bash
# A wrong secret key fails `ferry mount` of an S3 source with one clear line and a non-zero
# exit, leaving nothing mounted and no daemon behind; so do an unknown key id, a missing bucket,
# a credentials file readable by others and no credentials at all. The secret never shows: not
# in those messages, not in the daemon's command line (ps) of a mount that works, not in its
# debug log.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3
make_tree "$T/src" a.bin:300K
s3_put_tree "$T/src" ds/ >/dev/null
M=$T/mnt
mkdir -p "$M"
secret=$AWS_SECRET_ACCESS_KEY
wrong=${secret%????}WXYZ
src="s3://$S3_BUCKET/ds/"

no_secret_in() { # file what
	if grep -qF -e "$secret" -e "$wrong" "$1"; then
		fail "$2 holds the secret"
	fi
}
no_ferry_daemon() { # what
	if pgrep -f -- "$T/mnt" >/dev/null; then
		fail "$1: a process with the mountpoint in its arguments is still running"
	fi
}

expect_clean_failure "wrong secret" "$M" env AWS_SECRET_ACCESS_KEY="$wrong" \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M"
grep -q "access denied" "$T/.err" || fail "wrong secret: no 'access denied' in: $(cat "$T/.err")"
grep -q "SignatureDoesNotMatch" "$T/.err" || fail "wrong secret: the reason is not named"
no_secret_in "$T/.err" "the wrong-secret message"
no_secret_in "$T/.out" "stdout of the failed mount"
no_ferry_daemon "wrong secret"

expect_clean_failure "unknown access key id" "$M" env AWS_ACCESS_KEY_ID=NOSUCHKEY00000000000 \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M"
grep -q "InvalidAccessKeyId" "$T/.err" || fail "unknown key: $(cat "$T/.err")"
no_secret_in "$T/.err" "the unknown-key message"

expect_clean_failure "no such bucket" "$M" \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" s3://no-such-bucket/ds/ "$M"
grep -q "no such bucket" "$T/.err" || fail "missing bucket: $(cat "$T/.err")"

log "a credentials file readable by others is refused"
mkdir -p "$HOME/.aws"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
	"$AWS_ACCESS_KEY_ID" "$secret" >"$HOME/.aws/credentials"
chmod 644 "$HOME/.aws/credentials"
expect_clean_failure "credentials file mode 644" "$M" \
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M"
no_secret_in "$T/.err" "the file-mode message"
rm -f "$HOME/.aws/credentials"
expect_clean_failure "no credentials anywhere" "$M" \
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M"
no_ferry_daemon "failed mounts"

log "the right secret mounts; the daemon's command line and debug log hold no secret"
echo "$(realpath -m "$M")" >>"$T/.mounts"
timeout 60 "$FERRY" mount -f -v -v --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M" \
	>"$T/daemon.log" 2>&1 &
echo $! >>"$T/.pids"
for _ in $(seq 100); do
	is_mounted "$M" && break
	sleep 0.1
done
is_mounted "$M" || { cat "$T/daemon.log" >&2; fail "the right secret did not mount"; }
cmp "$T/src/a.bin" "$M/a.bin" || fail "a.bin differs"
ps -ww -e -o pid=,args= >"$T/ps.txt"
grep -F -- "$M" "$T/ps.txt" >/dev/null || fail "the daemon is not in ps"
no_secret_in "$T/ps.txt" "ps -e -o args"
umount_ferry "$M"
wait
no_secret_in "$T/daemon.log" "the daemon's debug log"
grep -q . "$T/daemon.log" || fail "the debug log is empty: the check above proves nothing"

# The cache now holds this source's listing and a.bin. A server that answers (403) is not an
# unreachable one: the mount must still fail, not come up offline serving the cached bytes.
log "a wrong secret with the source's cache warm still fails"
expect_clean_failure "wrong secret, warm cache" "$M" env AWS_SECRET_ACCESS_KEY="$wrong" \
	"$FERRY" mount --cache-dir "$T/cache" --endpoint "$S3_ENDPOINT" "$src" "$M"
grep -q "access denied" "$T/.err" || fail "wrong secret, warm cache: $(cat "$T/.err")"
no_secret_in "$T/.err" "the warm-cache message"
pass
