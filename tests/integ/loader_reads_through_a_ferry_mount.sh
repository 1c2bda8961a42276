#!/usr/bin/env bash
# The loader on a ferry mount of an HTTP dataset: batches read through the mount, by the fast
# path (FERRY_IOC_RESIDENT + O_DIRECT reads of the daemon's cache file, checked against the
# block checksums the ioctl answers) and by plain reads of the mount, all equal the batches
# read from the source files; and still do when the cache is much smaller than the dataset,
# so the daemon evicts while the loader reads.
# SKIP (77) until the ferry binary with `mount` is built, or where FUSE is unavailable.
set -euo pipefail
build=${FERRY_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
src=${FERRY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
ferry=$build/mount/ferry
dump=$build/loader/loader-dump
data_tool=$build/loader/ferry-data
[ -x "$ferry" ] || { echo "SKIP: $ferry not built yet"; exit 77; }
[ -e /dev/fuse ] && command -v fusermount3 >/dev/null || { echo "SKIP: no FUSE here"; exit 77; }
"$ferry" --help 2>&1 | grep -q mount || { echo "SKIP: ferry has no mount command yet"; exit 77; }

tmp=$(mktemp -d /tmp/ferry_loader_mount.XXXXXX)
daemon_pid=""
cleanup() {
	set +e
	mountpoint -q "$tmp/mnt" 2>/dev/null && fusermount3 -u "$tmp/mnt"
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	bash "$src/tests/lib/nginx.sh" stop "$tmp/nginx" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/www" "$tmp/mnt"
/usr/bin/python3 -c "
import random; random.seed(5)
w = ['alpha', 'beta', 'gamma', 'delta', 'ferry', '\n']
open('$tmp/text.txt', 'w').write(' '.join(random.choice(w) for _ in range(2500000)))"
# ~15 MB of text -> 13 train shards of 1M tokens (2 MB each), val shards alongside.
"$data_tool" make --text "$tmp/text.txt" --out "$tmp/www/data" --shard-tokens 1000000 >/dev/null
port=$(bash "$src/tests/lib/nginx.sh" start "$tmp/nginx" "$tmp/www")

mount_ferry() { # cache-size
	"$ferry" mount "http://127.0.0.1:$port/data/" "$tmp/mnt" --cache-dir "$tmp/cache" \
		--cache-size "$1" --chunk-size 1M -f 2>"$tmp/daemon.log" &
	daemon_pid=$!
	for _ in $(seq 100); do
		[ -e "$tmp/mnt/train_000000.bin" ] && return 0
		kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "mount did not come up" >&2
	exit 1
}
umount_ferry() {
	fusermount3 -u "$tmp/mnt"
	wait "$daemon_pid" || true
	daemon_pid=""
}

run() { # name data-path env... : dumps 60 shuffled batches and 60 sequential ones
	local name=$1 path=$2
	shift 2
	env "$@" "$dump" --data "$path/train_*.bin" --batch 8 --seq 256 --seed 3 --shuffle \
		--steps 60 --verbose --out "$tmp/$name.shuf" 2>"$tmp/$name.log"
	env "$@" "$dump" --data "$path/train_*.bin" --batch 8 --seq 256 --steps 60 \
		--out "$tmp/$name.seq" 2>>"$tmp/$name.log"
}
same() { # a b
	cmp -s "$tmp/$1.shuf" "$tmp/$2.shuf" && cmp -s "$tmp/$1.seq" "$tmp/$2.seq" ||
		{ echo "$1 and $2 batches differ" >&2; cat "$tmp/$2.log" >&2; exit 1; }
}

run source "$tmp/www/data" FERRY_LOADER_IO=pread
mount_ferry 1G
# getxattr(2) through python: getfattr (Debian's attr) is not among ferry's dependencies.
/usr/bin/python3 -c 'import os, sys; os.getxattr(sys.argv[1], "user.ferry.source")' \
	"$tmp/mnt/train_000000.bin" || { echo "the mount offers no user.ferry.source xattr" >&2; exit 1; }
run plain "$tmp/mnt" FERRY_LOADER_DIRECT=0
grep -q "read path io_uring" "$tmp/plain.log" || { cat "$tmp/plain.log" >&2; exit 1; }
same source plain
run direct "$tmp/mnt" FERRY_LOADER_DIRECT=1
grep -q "read path ferry-direct" "$tmp/direct.log" || { cat "$tmp/direct.log" >&2; exit 1; }
if grep -q "ferry fast path" "$tmp/direct.log"; then
	echo "the fast path fell back:" >&2; cat "$tmp/direct.log" >&2; exit 1
fi
# Every block the fast path read matched the daemon's checksums, and none was read again.
grep -Eq "fast path: .*; [1-9][0-9]* blocks matched their checksums, 0 reads were redone" \
	"$tmp/direct.log" || { echo "the fast path checked nothing, or redid reads:" >&2; cat "$tmp/direct.log" >&2; exit 1; }
same source direct
echo "fast path and plain path through the mount equal the source: ok"
umount_ferry

# A 4 MiB cache under ~26 MB of shards: chunks are evicted while the loader reads.
rm -rf "$tmp/cache"
mount_ferry 4M
run evict "$tmp/mnt" FERRY_LOADER_DIRECT=1
same source evict
umount_ferry
echo "loader through a ferry mount under cache pressure: ok"
