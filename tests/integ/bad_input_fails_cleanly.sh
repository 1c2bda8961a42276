#!/usr/bin/env bash
# Each bad input to `ferry mount` is one line on stderr and a non-zero exit, with nothing
# left mounted: an unreachable host (nothing cached), a 404 root, URLs that are not
# http(s), a missing or non-empty mountpoint, a mountpoint already mounted, an unwritable
# cache dir, nonsense sizes. And `--help` answers on every command.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" ds/x.bin:10K
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/ds/"
M=$T/mnt
mkdir -p "$M"
fm=("$FERRY" mount --cache-dir "$T/cache")

dead=$(free_port)
expect_clean_failure "unreachable host" "$M" "${fm[@]}" "http://127.0.0.1:$dead/ds/" "$M"
expect_clean_failure "404 root" "$M" "${fm[@]}" "http://127.0.0.1:$PORT/no-such-dir/" "$M"
expect_clean_failure "404 single file" "$M" "${fm[@]}" "http://127.0.0.1:$PORT/ds/nope.bin" "$M"
expect_clean_failure "ftp URL" "$M" "${fm[@]}" "ftp://127.0.0.1:$PORT/ds/" "$M"
expect_clean_failure "gopher URL" "$M" "${fm[@]}" "gopher://127.0.0.1/" "$M"
expect_clean_failure "misspelt scheme" "$M" "${fm[@]}" "htp://127.0.0.1:$PORT/ds/" "$M"
expect_clean_failure "URL without host" "$M" "${fm[@]}" "http:///ds/" "$M"
expect_clean_failure "bad port" "$M" "${fm[@]}" "http://127.0.0.1:99999/ds/" "$M"
expect_clean_failure "missing local source" "$M" "${fm[@]}" "$T/no-such-source" "$M"
expect_clean_failure "missing mountpoint" "$T/nowhere" "${fm[@]}" "$url" "$T/nowhere"
[ ! -e "$T/nowhere" ] || fail "a failed mount created the missing mountpoint"
mkdir -p "$T/full" && echo x >"$T/full/file"
expect_clean_failure "non-empty mountpoint" "$T/full" "${fm[@]}" "$url" "$T/full"
echo x >"$T/plainfile"
expect_clean_failure "mountpoint is a file" "$T/plainfile" "${fm[@]}" "$url" "$T/plainfile"
expect_clean_failure "no arguments" "$M" "$FERRY" mount
expect_clean_failure "one argument" "$M" "${fm[@]}" "$url"
expect_clean_failure "unknown option" "$M" "${fm[@]}" --no-such-option "$url" "$M"

for size in lots 12Q -5G "" 0x10 1.5.5G 99999999999999999999T; do
	expect_clean_failure "--cache-size '$size'" "$M" "${fm[@]}" --cache-size "$size" "$url" "$M"
done
for size in banana 3M 0 1G; do
	expect_clean_failure "--chunk-size '$size'" "$M" "${fm[@]}" --chunk-size "$size" "$url" "$M"
done

log "unwritable cache dirs"
expect_clean_failure "cache dir under a file" "$M" \
	"$FERRY" mount --cache-dir "$T/plainfile/cache" "$url" "$M"
mkdir -p "$T/ro"
if mount -t tmpfs -o ro,size=1M tmpfs "$T/ro" 2>/dev/null; then
	echo "$T/ro" >>"$T/.mounts"
	expect_clean_failure "cache dir on a read-only fs" "$M" \
		"$FERRY" mount --cache-dir "$T/ro/cache" "$url" "$M"
fi
if [ "$(id -u)" -ne 0 ]; then
	mkdir -p "$T/noperm" && chmod 555 "$T/noperm"
	expect_clean_failure "cache dir without permission" "$M" \
		"$FERRY" mount --cache-dir "$T/noperm/cache" "$url" "$M"
fi

log "already mounted"
mount_ferry "$url" "$M"
expect_clean_failure "mountpoint already mounted" "$M" "${fm[@]}" "$url" "$M"
[ "$(nr_mounts_at "$M")" -eq 1 ] || fail "two mounts stacked at $M"
cmp "$M/x.bin" "$T/src/ds/x.bin" || fail "the first mount broke after a second try"
umount_ferry "$M"

log "other commands"
expect_clean_failure "umount of a plain directory" "$M" "$FERRY" umount "$M"
expect_clean_failure "stat of a plain directory" "$M" "$FERRY" stat "$M"
expect_clean_failure "unknown command" "$M" "$FERRY" frobnicate
for cmd in "" mount umount stat warm manifest; do
	out=$(timeout 10 "$FERRY" $cmd --help 2>&1) || fail "ferry $cmd --help exits non-zero"
	[ -n "$out" ] || fail "ferry $cmd --help prints nothing"
done
[ -z "$(ls -A "$M")" ] || fail "failed mounts left files in the mountpoint"
pass
