#!/usr/bin/env bash
# Mounting an nginx directory, one file of it, and a local directory: every file read through
# the mount has the source's sha256; the mount is read-only; xattrs and `ferry stat` answer.
. "$(dirname "$0")/lib.sh"
need_fuse
make_dataset "$T/src"
serve_nginx "$T/src"

log "directory URL"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
same_tree "$T/src" "$T/mnt"
log "a second read is served again with the same bytes"
same_tree "$T/src" "$T/mnt"

log "writes fail with EROFS"
for op in "touch $T/mnt/new" "rm $T/mnt/one.bin" "mkdir $T/mnt/d" "truncate -s0 $T/mnt/one.bin"; do
	if out=$($op 2>&1); then fail "$op succeeded on a read-only mount"; fi
	case "$out" in *"Read-only file system"*) ;; *) fail "$op: want EROFS, got: $out" ;; esac
done

log "xattrs: the ETag is nginx's, cached bytes cover a file read whole"
want_etag=$(curl -sfI "http://127.0.0.1:$PORT/a/chunk.bin" | tr -d '\r' |
	awk 'tolower($1) == "etag:" { print $2 }')
got_etag=$(xattr "$T/mnt/a/chunk.bin" user.ferry.etag) || fail "no user.ferry.etag"
[ "$got_etag" = "$want_etag" ] || [ "\"$got_etag\"" = "$want_etag" ] ||
	fail "user.ferry.etag is '$got_etag', nginx says '$want_etag'"
cached=$(xattr "$T/mnt/a/chunk.bin" user.ferry.cached) || fail "no user.ferry.cached"
[ "$cached" = $((8 << 20)) ] || fail "user.ferry.cached is '$cached' after a whole read of 8 MiB"
"$PY" -c 'import json,os,sys; json.loads(os.getxattr(sys.argv[1], "user.ferry.stats"))' "$T/mnt" ||
	fail "user.ferry.stats on the root is not JSON"

log "ferry stat: a table, and JSON whose counters saw the reads"
timeout 30 "$FERRY" stat "$T/mnt" >"$T/stat.txt" || fail "ferry stat failed"
[ -s "$T/stat.txt" ] || fail "ferry stat printed nothing"
fetched=$(stat_json "$T/mnt" bytes_fetched)
total=$(du -sb --apparent-size "$T/src" | cut -f1)
src_bytes=$(find "$T/src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
[ "$fetched" -ge "$src_bytes" ] || fail "bytes_fetched $fetched < $src_bytes bytes read"
# docs/ferry.md names the error counters fetch_errors, read_errors and verify_failures.
for k in fetch_errors read_errors verify_failures; do
	[ "$(stat_json "$T/mnt" "$k")" = 0 ] || fail "$k counted on a clean run"
done
grep -Eq '^errors +0 fetch, 0 read, 0 checksum$' "$T/stat.txt" ||
	fail "ferry stat's table has no clean errors line: $(grep errors "$T/stat.txt")"
hits=$(stat_json "$T/mnt" hits)
misses=$(stat_json "$T/mnt" misses)
[ "$misses" -gt 0 ] || fail "no misses counted after a cold read"
umount_ferry "$T/mnt"

log "single-file URL: the mount holds that one file"
mount_ferry "http://127.0.0.1:$PORT/a/b/twenty.bin" "$T/one" --cache-dir "$T/cache1"
[ "$(ls -A "$T/one")" = twenty.bin ] || fail "single-file mount shows: $(ls -A "$T/one")"
cmp "$T/src/a/b/twenty.bin" "$T/one/twenty.bin" || fail "single-file mount differs"
umount_ferry "$T/one"

log "local directory as SOURCE"
mount_ferry "$T/src" "$T/local" --cache-dir "$T/cache2"
same_tree "$T/src" "$T/local"
umount_ferry "$T/local"
pass "hits $hits misses $misses fetched $fetched of $total"
