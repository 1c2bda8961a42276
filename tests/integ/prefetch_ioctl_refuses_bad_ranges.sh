#!/usr/bin/env bash
# FERRY_IOC_PREFETCH given bad input: a range past the end of the file, a zero length, more
# ranges than the call takes, an offset + length that wraps, flags it does not know, a struct
# of another size, a directory: each a clear error (EINVAL, or ENOTTY for what is not the call),
# nothing fetched, the daemon up and serving the right bytes. A good request starts the chunks
# of its ranges and says so; one past the daemon's readahead bound says where it stopped; off
# a ferry mount the call is ENOTTY.
. "$(dirname "$0")/lib.sh"
drv=$FERRY_BUILD/tests/integ/prefetch_ioctl_driver
need_fuse
need_built "$drv"
mkdir -p "$T/src/d" "$T/src/slow"
head -c $((10 << 20)) /dev/urandom >"$T/src/d/f.bin" # 10 MiB: chunks 0-9 of 1 MiB
truncate -s 256M "$T/src/slow/big.bin"
serve_nginx "$T/src"
# slow/ at 64 KiB/s a request: prefetched chunks stay in flight, so the daemon's bound holds.
master=$(cat "$NGINX_STATE/nginx.pid")
old_workers=$(pgrep -P "$master" | sort)
sed -i 's|location / { }|location / { } location /slow/ { limit_rate 64k; }|' "$NGINX_STATE/nginx.conf"
grep -q 'limit_rate 64k' "$NGINX_STATE/nginx.conf" || fail "nginx.sh's config changed: no location to slow"
nginx -p "$NGINX_STATE" -c "$NGINX_STATE/nginx.conf" -g "user root;" -s reload 2>/dev/null ||
	fail "nginx did not reload"
for _ in $(seq 100); do
	[ -z "$(comm -12 <(pgrep -P "$master" | sort) <(echo "$old_workers"))" ] && break
	sleep 0.1
done
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M
f=$T/mnt/d/f.bin
size=$((10 << 20))
gets() { nginx_requests | awk '$1 == "GET" && $2 == "/d/f.bin"' | wc -l; }

expect() { # want-error description driver-args...
	local want=$1 what=$2 out
	shift 2
	out=$("$drv" "$@" 2>&1) && fail "$what: the call succeeded: $out"
	[ "$out" = "$want" ] || fail "$what: '$out', want '$want'"
	log "$what: $out"
}
expect "Invalid argument" "a range past the end" "$f" 0:4096 $((size - 10)):11
expect "Invalid argument" "a range starting at the end" "$f" $size:1
expect "Invalid argument" "a range far past the end" "$f" $((1 << 62)):4096
expect "Invalid argument" "a zero length" "$f" 0:4096 4096:0
expect "Invalid argument" "offset + length wraps" "$f" 4096:18446744073709551615
expect "Invalid argument" "offset + length wraps to a small end" "$f" \
	18446744073709551615:2
expect "Invalid argument" "1001 ranges" "$f" --nr 1001 0:4096
expect "Invalid argument" "4294967295 ranges" "$f" --nr 4294967295 0:4096
expect "Invalid argument" "unknown flags" "$f" --flags 1 0:4096
expect "Inappropriate ioctl for device" "a struct of another size" "$f" --small
expect "Inappropriate ioctl for device" "on a directory" "$T/mnt/d" 0:1
[ "$(gets)" = 0 ] || fail "a refused request fetched something: $(gets) GETs"

log "a good request: chunks 2, 3 and 7 in that order, one shared by two ranges"
out=$("$drv" "$f" 2097152:100 2100000:1048576 7340032:1) || fail "a good request failed: $out"
echo "$out" | grep -q "^nr_done 3 next_offset 7340033 nr_started 3 nr_chunks 3 chunk_bytes 1048576 file_size $size " ||
	fail "a good request answered: $out"
for _ in $(seq 100); do [ "$(gets)" -ge 3 ] && break; sleep 0.1; done
[ "$(gets)" = 3 ] || fail "$(gets) GETs after a request for 3 chunks"
out=$("$drv" "$f" --nr 0) || fail "an empty request failed: $out"
echo "$out" | grep -q "^nr_done 0 next_offset 0 nr_started 0 " || fail "an empty request answered: $out"
cmp "$T/src/d/f.bin" "$f" || fail "the mount serves other bytes after the bad requests"

# Chunk 0, then chunks 2-128: 128 chunks of 1 MiB fill the bound; chunk 129 is where it stopped.
log "the readahead bound (128 MiB in memory) stops a request for 200 MiB and says where"
out=$("$drv" "$T/mnt/slow/big.bin" 0:1048576 $((2 << 20)):$((200 << 20))) || fail "a large request failed: $out"
echo "$out" | grep -q "^nr_done 1 next_offset $((129 << 20)) nr_started 128 nr_chunks 128 " ||
	fail "a request past the bound answered: $out"
cmp "$T/src/d/f.bin" "$f" || fail "the mount does not serve the right bytes while the bound is full"

head -c 4096 /dev/zero >"$T/plain.bin"
expect "Inappropriate ioctl for device" "off a ferry mount" "$T/plain.bin" 0:1
pass "bad ranges are refused with EINVAL, nothing fetched; a good request fetches its chunks"
