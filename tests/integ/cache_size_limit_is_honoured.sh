#!/usr/bin/env bash
# --cache-size 8M with 1 MiB chunks under 40 MiB of reads, twice over: the cache never holds
# more than the limit plus one chunk (on disk and in `ferry stat`), and every read is right.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a:12M b:9M c/d:7M c/e:5M f:3M g:4M
serve_nginx "$T/src"
limit=$((8 << 20)) chunk=$((1 << 20))
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --cache-size 8M --chunk-size 1M

# Watch the cache's real disk use while reading; a little slack for the chunk maps.
( max=0
  while [ ! -e "$T/stop" ]; do
	u=$(disk_used_bytes "$T/cache")
	[ "$u" -gt "$max" ] && max=$u && echo "$max" >"$T/max"
	sleep 0.1
  done ) &
echo $! >>"$T/.pids"
same_tree "$T/src" "$T/mnt"
"$PY" - "$T/src" "$T/mnt" <<'PY'
import os, random, sys
src, mnt = sys.argv[1:3]
rng = random.Random(5)
files = ["a", "b", "c/d", "c/e", "f", "g"]
for i in range(300):
    f = rng.choice(files)
    size = os.path.getsize(os.path.join(src, f))
    off, n = rng.randrange(size), rng.choice([1, 4096, 300000, 2 << 20])
    with open(os.path.join(src, f), "rb") as a, open(os.path.join(mnt, f), "rb") as b:
        a.seek(off); b.seek(off)
        if a.read(n) != b.read(n):
            sys.exit("%s: read of %d at %d differs" % (f, n, off))
print("300 random reads equal under eviction")
PY
same_tree "$T/src" "$T/mnt"
touch "$T/stop"
sleep 0.3
max=$(cat "$T/max" 2>/dev/null || echo 0)
[ "$max" -gt 0 ] || fail "the cache never held anything on disk"
[ "$max" -le $((limit + chunk + (1 << 20))) ] ||
	fail "cache held $max bytes on disk, limit $limit + one chunk"
used=$(stat_json "$T/mnt" cache_used_bytes used_bytes)
[ "$used" -le $((limit + chunk)) ] || fail "ferry stat says $used bytes used, limit $limit + one chunk"
smax=$(stat_json "$T/mnt" cache_max_bytes max_bytes)
[ "$smax" = "$limit" ] || fail "ferry stat says the limit is $smax, want $limit"
umount_ferry "$T/mnt"
pass "most on disk $((max >> 10)) KiB, limit $((limit >> 10)) KiB"
