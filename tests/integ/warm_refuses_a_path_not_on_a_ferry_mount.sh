#!/usr/bin/env bash
# `ferry warm` on a path that is not on a ferry mount (a plain directory of 300 files, a
# missing path, the mount's own source directory next to a path that is on the mount) is
# refused at once: exit 1 and one line, before a byte is fetched for the path that is on it.
. "$(dirname "$0")/lib.sh"
need_fuse
many_files "$T/plain" 300 4096
make_tree "$T/src" on/a.bin:3M
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M --dir-readahead 0

# refused DESC PATH...: ferry warm PATH... fails within 5 s with one line.
refused() {
	local desc=$1 s took
	shift
	s=$EPOCHREALTIME
	expect_clean_failure "$desc" "$T/mnt" "$FERRY" warm "$@"
	took=$("$PY" -c "print('%.2f' % ($EPOCHREALTIME - $s))")
	"$PY" -c "import sys; sys.exit(float(sys.argv[1]) > 5.0)" "$took" ||
		fail "$desc: refused after $took s, want at once"
}

refused "a plain directory of 300 files" "$T/plain"
grep -q "not on a ferry mount" "$T/.err" || fail "the line does not say why: $(cat "$T/.err")"
refused "a plain file" "$T/plain/f00007"
refused "a path that does not exist" "$T/mnt/no/such/file"
refused "a path on the mount, then one that is not" "$T/mnt/on" "$T/src"
[ "$(xattr "$T/mnt/on/a.bin" user.ferry.cached)" = 0 ] ||
	fail "the path on the mount was warmed before the other was refused"
if nginx_requests | grep -q '^GET /on/a.bin'; then
	fail "a.bin was fetched before the other path was refused"
fi

log "the path on the mount alone warms"
timeout 60 "$FERRY" warm "$T/mnt/on" 2>"$T/warm.err" || fail "ferry warm: $(cat "$T/warm.err")"
[ "$(xattr "$T/mnt/on/a.bin" user.ferry.cached)" = $((3 << 20)) ] ||
	fail "a.bin is not all cached after ferry warm"
umount_ferry "$T/mnt"
pass
