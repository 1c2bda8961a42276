#!/usr/bin/env bash
# The loader on a ferry mount of an HTTP dataset: batches read through the mount, by the fast
# path (FERRY_IOC_RESIDENT + O_DIRECT reads of the daemon's cache file, checked against the
# block checksums the ioctl answers) and by plain reads of the mount, all equal the batches
# read from the source files; and still do when the cache is much smaller than the dataset,
# so the daemon evicts while the loader reads.
. "$(dirname "$0")/lib.sh"
dump=$FERRY_BUILD/loader/loader-dump
data_tool=$FERRY_BUILD/loader/ferry-data
need_fuse
need_built "$dump" "$data_tool"

mkdir -p "$T/www"
"$PY" -c "
import random; random.seed(5)
w = ['alpha', 'beta', 'gamma', 'delta', 'ferry', '\n']
open('$T/text.txt', 'w').write(' '.join(random.choice(w) for _ in range(2500000)))"
# ~15 MB of text -> 13 train shards of 1M tokens (2 MB each), val shards alongside.
"$data_tool" make --text "$T/text.txt" --out "$T/www/data" --shard-tokens 1000000 >/dev/null ||
	fail "ferry data make failed"
serve_nginx "$T/www"
url=http://127.0.0.1:$PORT/data/

run() { # name data-path env... : dumps 60 shuffled batches and 60 sequential ones
	local name=$1 path=$2
	shift 2
	env "$@" "$dump" --data "$path/train_*.bin" --batch 8 --seq 256 --seed 3 --shuffle \
		--steps 60 --verbose --out "$T/$name.shuf" 2>"$T/$name.log" ||
		{ cat "$T/$name.log" >&2; fail "$name: loader-dump failed"; }
	env "$@" "$dump" --data "$path/train_*.bin" --batch 8 --seq 256 --steps 60 \
		--out "$T/$name.seq" 2>>"$T/$name.log" ||
		{ cat "$T/$name.log" >&2; fail "$name: loader-dump failed"; }
}
same() { # a b
	cmp -s "$T/$1.shuf" "$T/$2.shuf" && cmp -s "$T/$1.seq" "$T/$2.seq" ||
		{ cat "$T/$2.log" >&2; fail "$1 and $2 batches differ"; }
}

run source "$T/www/data" FERRY_LOADER_IO=pread
mount_ferry "$url" "$T/mnt" --cache-size 1G --chunk-size 1M
xattr "$T/mnt/train_000000.bin" user.ferry.source >/dev/null ||
	fail "the mount offers no user.ferry.source xattr"
run plain "$T/mnt" FERRY_LOADER_DIRECT=0
grep -q "read path io_uring" "$T/plain.log" || { cat "$T/plain.log" >&2; fail "plain: not io_uring"; }
same source plain
run direct "$T/mnt" FERRY_LOADER_DIRECT=1
grep -q "read path ferry-direct" "$T/direct.log" ||
	{ cat "$T/direct.log" >&2; fail "direct: not the ferry-direct path"; }
if grep -q "ferry fast path" "$T/direct.log"; then
	cat "$T/direct.log" >&2
	fail "the fast path fell back"
fi
# Every block the fast path read matched the daemon's checksums, and none was read again.
grep -Eq "fast path: .*; [1-9][0-9]* blocks matched their checksums, 0 reads were redone" \
	"$T/direct.log" || { cat "$T/direct.log" >&2; fail "the fast path checked nothing, or redid reads"; }
same source direct
log "fast path and plain path through the mount equal the source"
umount_ferry "$T/mnt"

# A 4 MiB cache under ~26 MB of shards: chunks are evicted while the loader reads.
rm -rf "$T/cache"
mount_ferry "$url" "$T/mnt" --cache-size 4M --chunk-size 1M
run evict "$T/mnt" FERRY_LOADER_DIRECT=1
same source evict
umount_ferry "$T/mnt"
pass "the loader through a ferry mount equals the source, also under cache pressure"
