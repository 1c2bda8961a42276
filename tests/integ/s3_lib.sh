# shellcheck shell=bash
# The S3 part of the integration harness, sourced after lib.sh by the s3_*.sh tests: starts a
# radosgw on loopback (tests/lib/s3server.sh) that is stopped on exit before lib.sh's cleanup
# unmounts and removes $T, and uploads with botocore (an S3 client independent of ferry's signer).
#   . "$(dirname "$0")/lib.sh"; . "$(dirname "$0")/s3_lib.sh"; need_s3; serve_s3
#   s3_put_tree "$T/src" ds/; mount_ferry "s3://$S3_BUCKET/ds/" "$T/mnt" --endpoint "$S3_ENDPOINT"
S3SERVER_SH=$FERRY_SRC/tests/lib/s3server.sh
S3_STATE=

need_s3() {
	need_cmd radosgw
	need_python botocore
}

# Run by lib.sh's cleanup before its own work: the S3 daemons go first.
s3_cleanup() {
	[ -n "$S3_STATE" ] || return 0
	# Unmount first, so that no daemon is left retrying against a server that is gone.
	while read -r m; do
		fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done < <(mounts_under "$T" | sort -r)
	bash "$S3SERVER_SH" stop "$S3_STATE" 2>/dev/null
	# A daemon that was lazily unmounted still writes its cache maps into $T for a
	# moment: wait for it (never kill it: it may be another test's), or rm -rf races it.
	local m p left
	for _ in $(seq 100); do
		left=
		for p in $(pgrep -f -- "$T/" 2>/dev/null); do
			[ "$p" = $$ ] || grep -qx "$p" "$T/.pids" || left+=" $p"
		done
		[ -z "$left" ] && break
		sleep 0.1
	done
	# shellcheck disable=SC2154 # rc: the exit status, seen from lib.sh's cleanup
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		tail -n 5 "$S3_STATE"/log/client.rgw.ferry.log 2>/dev/null | sed 's/^/radosgw: /' >&2
	fi
	return 0
}
on_exit s3_cleanup

# serve_s3 [BUCKET]: starts radosgw; exports the AWS_* variables of its test user, S3_ENDPOINT
# and S3_BUCKET; HOME moves into $T so that no ~/.aws of the machine is read.
serve_s3() {
	S3_STATE=$T/s3
	bash "$S3SERVER_SH" start "$S3_STATE" "${1:-ferry-test}" >/dev/null || fail "radosgw did not start"
	# shellcheck disable=SC1091
	. "$S3_STATE/env"
	export HOME=$T/home
	mkdir -p "$HOME"
}

# s3_py: runs python with a botocore client `s3` (path style) and `bucket` predefined.
s3_py() {
	local code=$1
	shift
	"$PY" - "$@" <<PY
import os, sys
import botocore.session
from botocore.config import Config
s3 = botocore.session.get_session().create_client(
    's3', region_name='us-east-1', endpoint_url=os.environ['S3_ENDPOINT'],
    config=Config(s3={'addressing_style': 'path'}, max_pool_connections=16,
                  retries={'max_attempts': 5}))
bucket = os.environ['S3_BUCKET']
$code
PY
}

# s3_put_tree DIR PREFIX: uploads every file under DIR as PREFIX + its relative path (16 at a
# time); prints how many.
s3_put_tree() {
	s3_py '
from concurrent.futures import ThreadPoolExecutor
root, prefix = sys.argv[1], sys.argv[2]
files = []
for d, _, fs in os.walk(root):
    for n in fs:
        p = os.path.join(d, n)
        files.append((p, prefix + os.path.relpath(p, root)))
def put(pk):
    with open(pk[0], "rb") as f:
        s3.put_object(Bucket=bucket, Key=pk[1], Body=f.read())
with ThreadPoolExecutor(16) as ex:
    list(ex.map(put, files))
print(len(files))
' "$1" "$2"
}

# s3_put_file FILE KEY: uploads one file.
s3_put_file() {
	s3_py '
with open(sys.argv[1], "rb") as f:
    s3.put_object(Bucket=bucket, Key=sys.argv[2], Body=f.read())
' "$1" "$2"
}
