#!/usr/bin/env bash
# Prefetch from the training order: the loader on a cold ferry mount hands the daemon the
# ranges of its next batches (FERRY_IOC_PREFETCH), and the daemon's GETs (nginx's access log,
# one transfer at a time so that the log's order is the order they were started in) follow the
# loader's order of need: the GETs of a run with prefetch are a prefix of the GETs a longer run
# without it makes on demand (the order of need, chunk by chunk), longer than a run of the same
# batches without it makes (it went ahead), and no chunk outside that order is fetched. The
# batches are bit for bit those read without prefetch and those read from the source files.
. "$(dirname "$0")/lib.sh"
dump=$FERRY_BUILD/loader/loader-dump
data_tool=$FERRY_BUILD/loader/ferry-data
need_fuse
need_built "$dump" "$data_tool"

mkdir -p "$T/www"
"$PY" -c "
import random; random.seed(11)
w = ['alpha', 'beta', 'gamma', 'delta', 'ferry', '\n']
open('$T/text.txt', 'w').write(' '.join(random.choice(w) for _ in range(1400000)))"
# ~8 MB of text -> 8 train shards of 1M tokens (2 MB each): 64 chunks of 256 KiB.
"$data_tool" make --text "$T/text.txt" --out "$T/www/data" --shard-tokens 1000000 >/dev/null ||
	fail "ferry data make failed"
serve_nginx "$T/www"
url=http://127.0.0.1:$PORT/data/
chunk=$((256 << 10))

log "nginx logs each request's Range"
master=$(cat "$NGINX_STATE/nginx.pid")
old_workers=$(pgrep -P "$master" | sort)
sed -i 's|access_log \(.*\)/access.log;|log_format ranges "$request_method $uri $http_range $status"; access_log \1/access.log ranges;|' \
	"$NGINX_STATE/nginx.conf"
grep -q 'access_log .* ranges;' "$NGINX_STATE/nginx.conf" || fail "nginx.sh's config changed: no access_log to change"
nginx -p "$NGINX_STATE" -c "$NGINX_STATE/nginx.conf" -g "user root;" -s reload || fail "nginx did not reload"
for _ in $(seq 100); do
	[ -z "$(comm -12 <(pgrep -P "$master" | sort) <(echo "$old_workers"))" ] && break
	sleep 0.1
done

# Shuffled, blocks of 256 KiB, windows of 2 blocks: 128 batches a window, ~15 windows an epoch.
order=(--batch 8 --seq 256 --seed 7 --shuffle --block-bytes 262144 --window-blocks 2)
# run NAME STEPS [env...]: a cold mount (one transfer at a time), STEPS batches by one reader;
# NAME.bin the batches, NAME.gets the chunks fetched after open ("shard chunk"), in order.
run() {
	local name=$1 steps=$2
	shift 2
	rm -rf "$T/cache"
	mount_ferry "$url" "$T/mnt" --chunk-size 256K --max-transfers 1
	: >"$NGINX_STATE/access.log"
	env FERRY_LOADER_THREADS=1 "$@" "$dump" --data "$T/mnt/train_*.bin" "${order[@]}" \
		--steps "$steps" --verbose --out "$T/$name.bin" 2>"$T/$name.log" ||
		{ cat "$T/$name.log" >&2; fail "$name: loader-dump failed"; }
	umount_ferry "$T/mnt"
	grep -q "read path ferry-direct" "$T/$name.log" || { cat "$T/$name.log" >&2; fail "$name: not the fast path"; }
	# Each shard's chunk 0 is read at open (its header), before any batch: not part of the order.
	awk -v c=$chunk '$1 == "GET" && $2 ~ /train_/ && $4 ~ /^20/ {
		split($3, r, /[=-]/); k = int(r[2] / c); if (k) print $2, k }' \
		"$NGINX_STATE/access.log" >"$T/$name.gets"
	awk '$1 == "GET" && $2 ~ /train_/ && $4 !~ /^20/' "$NGINX_STATE/access.log" | grep -q . &&
		fail "$name: a GET failed: $(awk '$4 !~ /^20/' "$NGINX_STATE/access.log" | head -3)"
	log "$name: $steps batches, $(wc -l <"$T/$name.gets") chunk GETs after open"
}
is_prefix() { # a b: a's lines are the first lines of b
	[ "$(wc -l <"$1")" -le "$(wc -l <"$2")" ] && head -n "$(wc -l <"$1")" "$2" | cmp -s - "$1"
}

steps=300
run need $((steps + 900)) FERRY_LOADER_PREFETCH=0 # the order of need, well past the horizon
run plain $steps FERRY_LOADER_PREFETCH=0
run ahead $steps FERRY_LOADER_PREFETCH=256
grep -q "prefetch from the order: the daemon is told of the next 256 batches" "$T/ahead.log" ||
	{ cat "$T/ahead.log" >&2; fail "ahead: prefetch did not start"; }
"$dump" --data "$T/www/data/train_*.bin" "${order[@]}" --steps $steps --out "$T/source.bin" \
	2>/dev/null || fail "loader-dump of the source files failed"

sort "$T/need.gets" | uniq -d | grep -q . && fail "a chunk was fetched twice without prefetch"
sort "$T/ahead.gets" | uniq -d | grep -q . && fail "a chunk was fetched twice with prefetch"
is_prefix "$T/plain.gets" "$T/need.gets" || fail "the order of need differs between two runs"
is_prefix "$T/ahead.gets" "$T/need.gets" || {
	diff "$T/ahead.gets" <(head -n "$(wc -l <"$T/ahead.gets")" "$T/need.gets") | head -20 >&2
	fail "with prefetch the GETs do not follow the order of need (or fetch other chunks)"
}
[ "$(wc -l <"$T/ahead.gets")" -gt "$(wc -l <"$T/plain.gets")" ] ||
	fail "with prefetch no chunk was fetched ahead of the readers ($(wc -l <"$T/ahead.gets") GETs, $(wc -l <"$T/plain.gets") without)"
# K = 256 batches is two windows past the one in use, and the window after: no further.
[ "$(wc -l <"$T/ahead.gets")" -lt "$(wc -l <"$T/need.gets")" ] ||
	fail "with prefetch as many chunks were fetched as $((steps + 900)) batches need"
cmp -s "$T/ahead.bin" "$T/plain.bin" || fail "the batches with prefetch differ from those without"
cmp -s "$T/plain.bin" "$T/source.bin" || fail "the batches through the mount differ from the source's"
head -c $(( $(stat -c %s "$T/plain.bin") )) "$T/need.bin" | cmp -s - "$T/plain.bin" ||
	fail "the first batches of the longer run differ"
pass "GETs follow the order of need, $(wc -l <"$T/ahead.gets") chunks ahead of $(wc -l <"$T/plain.gets") read; batches equal"
