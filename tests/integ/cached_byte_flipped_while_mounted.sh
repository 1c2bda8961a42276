#!/usr/bin/env bash
# A byte of a cached chunk is flipped in the cache's data file while the mount is up (and
# the page cache is dropped, so the read reaches the daemon): the next read returns the
# source's bytes (the chunk is dropped and fetched again) or EIO, never the flipped byte,
# and `ferry stat --json` counts a verify failure. The same with the byte flipped while
# unmounted and read after a remount, and again while that remount is up.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" f.bin:4M other.bin:3M
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"
mount_ferry "$url" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" --strict f.bin other.bin
data=$(cache_data_file_of "$T/src/f.bin" "$T/cache")
log "data file of f.bin: ${data#"$T"/}"

# damage_and_read OFFSET WHAT: flips the byte at OFFSET of f.bin's data file, then reads f.bin:
# the source's bytes or EIO, then (the server is up) the source's bytes; verify_failures moved.
damage_and_read() {
	local off=$1 what=$2 before after
	before=$(stat_json "$T/mnt" verify_failures)
	flip_byte "$data" "$off"
	drop_caches
	log "$what: byte $off flipped"
	reads_right_or_eio "$T/src" "$T/mnt" f.bin
	reads_right_or_eio "$T/src" "$T/mnt" --strict f.bin
	after=$(stat_json "$T/mnt" verify_failures)
	[ "$after" -gt "$before" ] ||
		fail "$what: verify_failures did not move ($before -> $after)"
}

damage_and_read $((1 << 20 | 12345)) "while mounted"
# The first and the last byte of the object, at both ends of their checksummed blocks.
damage_and_read 0 "while mounted, first byte"
damage_and_read $(((4 << 20) - 1)) "while mounted, last byte"
reads_right_or_eio "$T/src" "$T/mnt" --strict other.bin
umount_ferry "$T/mnt"

log "flipped while unmounted, read after a remount"
data=$(cache_data_file_of "$T/src/f.bin" "$T/cache")
flip_byte "$data" $((2 << 20 | 777))
mount_ferry "$url" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" f.bin
reads_right_or_eio "$T/src" "$T/mnt" --strict f.bin
[ "$(stat_json "$T/mnt" verify_failures)" -gt 0 ] ||
	fail "after a remount: verify_failures did not count the flipped byte"
data=$(cache_data_file_of "$T/src/f.bin" "$T/cache")
damage_and_read $((3 << 20 | 4242)) "after a remount, while mounted"
damage_and_read $((2 << 20 | 777)) "after a remount, the same byte again"
umount_ferry "$T/mnt"
pass
