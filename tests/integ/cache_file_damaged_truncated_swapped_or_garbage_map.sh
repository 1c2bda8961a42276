#!/usr/bin/env bash
# The cache's files are damaged under a mount: a data file truncated, one cut to zero length,
# the contents of two data files swapped, a map overwritten with garbage, a hole punched
# under a cached chunk. Each while mounted, after a remount, and after a remount with the
# server down: every read returns the source's bytes or fails with EIO, never other bytes;
# with the server up a second read returns the source's bytes.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v fallocate >/dev/null || fail "no fallocate (util-linux)"
# s1 and s2 have the same size, so that their data files can be swapped.
names=(trunc.bin zero.bin s1.bin s2.bin garbage.bin hole.bin)
make_tree "$T/src" trunc.bin:3M zero.bin:2M s1.bin:3M s2.bin:3M garbage.bin:2M hole.bin:4M
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"

# damage MODE: damages the data files (and one map) of the files above. MODE "inplace"
# changes the files' bytes where an open descriptor sees it (the daemon may hold them open);
# "rename" swaps the two data files by name (for a daemon that is not running).
damage() {
	local d
	declare -A data
	for n in "${names[@]}"; do
		data[$n]=$(cache_data_file_of "$T/src/$n" "$T/cache")
	done
	truncate -s $((3 << 19)) "${data[trunc.bin]}" # half way into the second chunk
	truncate -s 0 "${data[zero.bin]}"
	if [ "$1" = inplace ]; then
		cp "${data[s1.bin]}" "$T/swap"
		dd if="${data[s2.bin]}" of="${data[s1.bin]}" bs=1M conv=notrunc status=none
		dd if="$T/swap" of="${data[s2.bin]}" bs=1M conv=notrunc status=none
	else
		mv "${data[s1.bin]}" "$T/swap"
		mv "${data[s2.bin]}" "${data[s1.bin]}"
		mv "$T/swap" "${data[s2.bin]}"
	fi
	# A map may first be written at a sync (a clean unmount makes one): while mounted there
	# may be none yet; after an unmount there must be one.
	d=${data[garbage.bin]%.data}.map
	if [ -f "$d" ]; then
		head -c "$(stat -c %s "$d")" /dev/urandom >"$T/garbage"
		dd if="$T/garbage" of="$d" conv=notrunc status=none
	elif [ "$1" = inplace ]; then
		log "no map beside garbage.bin's data file yet (made at a sync): none to damage"
	else
		fail "no map beside ${data[garbage.bin]} after an unmount (the cache layout changed?)"
	fi
	# Punch the middle of the second chunk: the hole reads as zeros.
	fallocate -p -o $(((1 << 20) + 4096)) -l $((512 << 10)) "${data[hole.bin]}"
	sync
}

log "while mounted"
mount_ferry "$url" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" --strict "${names[@]}"
damage inplace
drop_caches
reads_right_or_eio "$T/src" "$T/mnt" "${names[@]}"
reads_right_or_eio "$T/src" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"

log "damaged while unmounted, read after a remount"
damage rename
mount_ferry "$url" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" "${names[@]}"
reads_right_or_eio "$T/src" "$T/mnt" --strict "${names[@]}"

log "damaged while the remount is up"
damage inplace
drop_caches
reads_right_or_eio "$T/src" "$T/mnt" "${names[@]}"
reads_right_or_eio "$T/src" "$T/mnt" --strict "${names[@]}"
umount_ferry "$T/mnt"

log "damaged while unmounted, remounted with the server down"
damage rename
stop_nginx
mount_ferry "$url" "$T/mnt" --chunk-size 1M
reads_right_or_eio "$T/src" "$T/mnt" "${names[@]}"
umount_ferry "$T/mnt"
pass
