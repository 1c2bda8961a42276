#!/usr/bin/env bash
# A file already in the chunk cache, read sequentially after drop_caches: the daemon reads the
# next chunks of the cache's data file into the page cache ahead of the reader (fetch.c,
# disk_ahead), far beyond what the kernel's own readahead of the data file covers; and every
# byte it serves is still checked: a byte flipped in a chunk read ahead gives the source's
# bytes or EIO, never the flipped byte, and counts a verify failure.
. "$(dirname "$0")/lib.sh"
need_fuse
need_cmd fincore
make_tree "$T/src" f.bin:160M
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" --strict f.bin
data=$(cache_data_file_of "$T/src/f.bin" "$T/cache")

# resident_mib FILE: how much of FILE the page cache holds, in MiB.
resident_mib() {
	local pages
	pages=$(fincore --bytes --noheadings --output PAGES "$1" | tr -d ' ')
	echo $((pages * $(getconf PAGESIZE) >> 20))
}

# The daemon may still be storing the last chunks it fetched (dirty pages drop_caches keeps):
# drop again until they are written, for up to 10 s.
for _ in $(seq 20); do
	drop_caches
	[ "$(resident_mib "$data")" -lt 8 ] && break
	sleep 0.5
done
[ "$(resident_mib "$data")" -lt 8 ] || fail "drop_caches left $(resident_mib "$data") MiB of the data file"
log "a sequential reader reads the first 4 MiB"
dd if="$T/mnt/f.bin" of=/dev/null bs=128k count=32 status=none
# The disk-ahead thread works in the background: wait for it, not for a fixed time.
got=0
for _ in $(seq 50); do
	got=$(resident_mib "$data")
	[ "$got" -ge 64 ] && break
	sleep 0.1
done
log "data file resident after reading 4 MiB: $got MiB"
# The kernel's readahead of the data file goes a few MiB past the 4 read; the daemon's asks for
# its 128 MiB window.
[ "$got" -ge 64 ] || fail "only $got MiB of the data file in the page cache: nothing read ahead"

log "a byte flipped in a chunk the reader has not reached yet is still caught"
before=$(stat_json "$T/mnt" verify_failures)
drop_caches
dd if="$T/mnt/f.bin" of=/dev/null bs=128k count=32 status=none
flip_byte "$data" $((100 << 20 | 4321))
reads_right_or_eio "$T/src" "$T/mnt" f.bin
reads_right_or_eio "$T/src" "$T/mnt" --strict f.bin
after=$(stat_json "$T/mnt" verify_failures)
[ "$after" -gt "$before" ] || fail "verify_failures did not move ($before -> $after)"
umount_ferry "$T/mnt"
pass
