#!/usr/bin/env bash
# `ferry manifest DIR` writes DIR/.ferry-manifest listing every entry (dotfiles too); served
# by nginx, it makes the mount list a tree of 12 directories and 600 files with one request:
# no directory index is fetched, no file is asked for until it is read, and sizes, mtimes
# and bytes are the source's.
. "$(dirname "$0")/lib.sh"
need_fuse
for d in 0 1 2 3 4 5 6 7 8 9; do
	many_files "$T/src/d$d" 60 2000
done
make_tree "$T/src" .hidden:10 sub/..double:20 "sub/with space%:5" sub/deeper/x:3M empty-dir/
find "$T/src" -mindepth 1 -exec touch -h -d "2022-05-06 07:08:09.5 UTC" {} +
touch -d "2021-01-01 00:00:01 UTC" "$T/src/d3/f00007"

timeout 60 "$FERRY" manifest "$T/src" || fail "ferry manifest failed"
[ -s "$T/src/.ferry-manifest" ] || fail "no $T/src/.ferry-manifest"
[ "$(head -1 "$T/src/.ferry-manifest")" = "ferry-manifest 1" ] || fail "manifest header"
nr_want=$(find "$T/src" -mindepth 1 ! -name .ferry-manifest | wc -l)
nr_lines=$(($(wc -l <"$T/src/.ferry-manifest") - 1))
[ "$nr_lines" -eq "$nr_want" ] || fail "manifest has $nr_lines entries, the tree $nr_want"
log "running it again gives the same manifest"
cp "$T/src/.ferry-manifest" "$T/manifest.1"
timeout 60 "$FERRY" manifest "$T/src" || fail "ferry manifest failed the second time"
cmp "$T/manifest.1" "$T/src/.ferry-manifest" || fail "a second ferry manifest differs"

serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
find "$T/mnt" -printf '%y %s %T@ %P\n' >/dev/null
ls -lR "$T/mnt" >/dev/null
nginx_requests >"$T/requests"
nr_manifest=$(awk '$2 == "/.ferry-manifest"' "$T/requests" | wc -l)
nr_index=$(awk '$2 ~ /\/$/ && $1 == "GET"' "$T/requests" | wc -l)
nr_other=$(awk '$2 != "/.ferry-manifest" && $2 !~ /\/$/' "$T/requests" | wc -l)
[ "$nr_manifest" -eq 1 ] || { cat "$T/requests" >&2; fail "$nr_manifest requests for the manifest"; }
[ "$nr_index" -le 1 ] || { cat "$T/requests" >&2; fail "$nr_index directory index GETs"; }
[ "$nr_other" -eq 0 ] || { head "$T/requests" >&2; fail "$nr_other requests for files before any read"; }
nr_total=$(wc -l <"$T/requests")

log "names, sizes, mtimes (to the nanosecond the manifest keeps) and bytes"
fnd() { (cd "$1" && find . -mindepth 1 ! -name .ferry-manifest -printf '%y %s %T@ %P\n' |
	awk '$1 == "d" { $2 = "-" } 1' | sort); }
diff <(fnd "$T/src") <(fnd "$T/mnt") >&2 || fail "find differs from the source"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
pass "$nr_total requests to list $nr_want entries"
