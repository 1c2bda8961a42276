#!/usr/bin/env bash
# A directory of many keys over S3 (radosgw on loopback): mounting does not list it, a sibling
# directory lists without it, its first `ls` pages through ListObjectsV2 and shows every key
# (checked name by name), the next `ls` and a remount answer from the kept listing, and a key
# deep in it reads its bytes. Prints the times. Not in CI: uploading 100,000 keys to radosgw
# on 2 cores takes about two minutes.
#   usage: bench_s3_listing.sh [NR_KEYS, default 100000]
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/s3_lib.sh"
need_fuse
need_s3
nr=${1:-100000}
serve_s3

now() { date +%s.%N; }
secs() { "$PY" -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }

log "uploading $nr keys under big/ (and 3 under small/)"
t0=$(now)
s3_py '
from concurrent.futures import ThreadPoolExecutor
n = int(sys.argv[1])
def put(key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
keys = ["big/k%07d" % i for i in range(n)] + ["small/a", "small/b", "big/sub/deep"]
with ThreadPoolExecutor(32) as ex:
    list(ex.map(put, keys))
' "$nr"
t1=$(now)
log "uploaded in $(secs "$t0" "$t1") s"

rows=()
t0=$(now)
mount_ferry "s3://$S3_BUCKET/" "$T/mnt" --endpoint "$S3_ENDPOINT" --region us-east-1
t1=$(now)
rows+=("mount (the big directory is not listed)|$(secs "$t0" "$t1")")

t0=$(now)
[ "$(ls "$T/mnt/small" | wc -l)" = 2 ] || fail "small/ does not list 2 keys"
t1=$(now)
rows+=("first ls of small/ (2 keys)|$(secs "$t0" "$t1")")

t0=$(now)
ls "$T/mnt/big" >"$T/ls1"
t1=$(now)
rows+=("first ls of big/ ($nr keys and a directory)|$(secs "$t0" "$t1")")
"$PY" - "$T/ls1" "$nr" <<'PY' || fail "the listing of big/ is not the keys uploaded"
import sys
got = open(sys.argv[1]).read().split("\n")[:-1]
want = sorted(["k%07d" % i for i in range(int(sys.argv[2]))] + ["sub"])
if got != want:
    missing, extra = set(want) - set(got), set(got) - set(want)
    sys.exit("ls big/: %d names, want %d; %d missing (e.g. %s), %d extra (e.g. %s)" % (
        len(got), len(want), len(missing), sorted(missing)[:3], len(extra), sorted(extra)[:3]))
PY

t0=$(now)
ls "$T/mnt/big" >"$T/ls2"
t1=$(now)
rows+=("second ls of big/ (kept listing)|$(secs "$t0" "$t1")")
cmp -s "$T/ls1" "$T/ls2" || fail "the second ls of big/ differs from the first"

mid=$(printf 'k%07d' $((nr / 2)))
[ "$(cat "$T/mnt/big/$mid")" = "big/$mid" ] || fail "big/$mid does not read its bytes"
[ "$(cat "$T/mnt/big/sub/deep")" = "big/sub/deep" ] || fail "big/sub/deep does not read its bytes"
umount_ferry "$T/mnt"

t0=$(now)
mount_ferry "s3://$S3_BUCKET/" "$T/mnt" --endpoint "$S3_ENDPOINT" --region us-east-1
ls "$T/mnt/big" >"$T/ls3"
t1=$(now)
rows+=("remount and ls of big/ (listing kept in the cache dir, within the ttl)|$(secs "$t0" "$t1")")
cmp -s "$T/ls1" "$T/ls3" || fail "ls of big/ after a remount differs"
umount_ferry "$T/mnt"

echo
echo "bench_s3_listing: $nr keys in one S3 directory, radosgw on loopback"
echo
echo "| step | seconds |"
echo "|---|---:|"
for r in "${rows[@]}"; do
	echo "| ${r%%|*} | ${r#*|} |"
done
pass
