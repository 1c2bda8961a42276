#!/usr/bin/env bash
# A real FUSE mount of an S3 prefix on radosgw: 1,500 keys under one prefix (the listing crosses
# the 1,000-key page), nested prefixes, keys with special characters, and objects across chunk
# boundaries. Names, sizes and the sha256 of every file through the mount equal the local tree
# that was uploaded (botocore), and ls/find count what was uploaded.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3

src=$T/src
many_files "$src/big" 1500 200
make_tree "$src" 'nested/a/b/c/deep.bin:70K' 'nested/a/top.bin:1' 'nested/x/y/z.bin:3000' \
	'chunks/two-chunks+1.bin:2097153' 'chunks/exact.bin:1M' 'chunks/empty.bin:0' \
	'special/a b+c=d%e&f?g#h.bin:1234' 'special/é日本😀.bin:5000' \
	"special/~tilde*'()!\$@:;,.bin:77" 'special/%2F%20plus+:99' 'special/x=y&z=1:10' \
	'special/  two leading spaces:3' 'special/tab	in name:4'
nr=$(s3_put_tree "$src" ds/)
nr_src=$(find "$src" -type f | wc -l)
[ "$nr" = "$nr_src" ] || fail "uploaded $nr of $nr_src files"
# Outside the mounted prefix: must not appear.
echo "not under ds/" >"$T/outside.txt"
s3_put_file "$T/outside.txt" outside.txt
s3_put_file "$T/outside.txt" ds-sibling/x.txt
log "uploaded $nr objects"

M=$T/mnt
mount_ferry "s3://$S3_BUCKET/ds/" "$M" --endpoint "$S3_ENDPOINT" --region us-east-1 \
	--addressing path --chunk-size 1M

log "ls and find counts"
n=$(ls "$M/big" | wc -l)
[ "$n" = 1500 ] || fail "ls big/ shows $n entries, want 1500"
n=$(find "$M/big" -type f | wc -l)
[ "$n" = 1500 ] || fail "find big/ shows $n files, want 1500"
a=$(cd "$src" && find . | sort | sha256sum)
b=$(cd "$M" && find . | sort | sha256sum)
if [ "$a" != "$b" ]; then
	diff <(cd "$src" && find . | sort) <(cd "$M" && find . | sort) | head -20 >&2
	fail "find lists other paths than were uploaded"
fi
[ "$(cd "$M" && find . -type d | wc -l)" = "$(cd "$src" && find . -type d | wc -l)" ] ||
	fail "find -type d counts differ"
[ ! -e "$M/outside.txt" ] || fail "a key outside the prefix is shown"

log "sha256 of everything through the mount"
same_tree "$src" "$M"
log "and again, now from the cache"
same_tree "$src" "$M"
[ "$(stat_json "$M" fetch_errors)" = 0 ] || fail "fetch errors counted"
umount_ferry "$M"

log "a mount of a nested prefix without the trailing slash"
mount_ferry "s3://$S3_BUCKET/ds/nested" "$M" --endpoint "$S3_ENDPOINT" --addressing path
same_tree "$src/nested" "$M"
umount_ferry "$M"
pass "$nr objects"
