# shellcheck shell=bash
# The shared chunk tier's part of the test harness (issue 11), sourced after tests/integ/lib.sh
# and s3_lib.sh by tests/integ/shared_tier_*.sh and tests/bench/bench_tier.sh. The tier is a
# bucket on radosgw (tests/lib/s3server.sh), the origin an nginx whose access log counts the
# body bytes it sent, and a "node" is a ferry mount with a cache directory of its own.
#   tier_setup; tier_dataset "$T/src"; origin_serve "$T/src"
#   node_mount 1 run/; same_tree "$T/src" "$T/node1"; tier_wait_drained "$T/node1"
#   origin_bytes; tier_objects verify "$TIER_BUCKET" run/ "$T/src" "$TIER_CHUNK_BYTES"
TIER_PY=$FERRY_SRC/tests/lib/tier_objects.py
TIER_BUCKET=ferry-tier
TIER_CHUNK_BYTES=${TIER_CHUNK_BYTES:-1048576}

# tier_setup: FAILs or SKIPs as the harness does for what is missing; starts radosgw with the
# tier's bucket (S3_ENDPOINT, AWS_* exported: the nodes take the tier's credentials from them).
tier_setup() {
	need_fuse
	need_s3
	need_cmd nginx
	"$PY" -c 'import ctypes; ctypes.CDLL("libxxhash.so.0")' 2>/dev/null ||
		fail "no libxxhash.so.0 for $TIER_PY (scripts/deps.sh installs libxxhash)"
	serve_s3 "$TIER_BUCKET"
}

# tier_objects CMD BUCKET ARGS...: tests/lib/tier_objects.py (list, verify, damage, ...).
tier_objects() {
	"$PY" "$TIER_PY" "$@"
}

# tier_dataset DIR: a 24 MiB file (TIER_BIG_MB: another size, e.g. the issue's 256), one of a
# chunk and a byte, and 100 small files of 1 byte to 60 KB (TIER_NR_SMALL: another count; none
# empty: an empty file has no chunk to share), seeded.
tier_dataset() {
	make_tree "$1" "big.bin:${TIER_BIG_MB:-24}M" "odd/chunk+1.bin:$((TIER_CHUNK_BYTES + 1))"
	"$PY" - "$1/small" "${TIER_NR_SMALL:-100}" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
rng = random.Random(11)
for i in range(n):
    with open(os.path.join(root, "s%03d.bin" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(1, 60000)))
PY
}

dataset_bytes() { # dir: the sum of the file sizes under it
	find "$1" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }'
}

dataset_chunks() { # dir: how many chunks of TIER_CHUNK_BYTES its files make
	find "$1" -type f -printf '%s\n' |
		awk -v c="$TIER_CHUNK_BYTES" '{ n += int(($1 + c - 1) / c) } END { print n + 0 }'
}

# origin_serve DIR: nginx serves DIR; sets ORIGIN_URL and ORIGIN_LOG.
origin_serve() {
	serve_nginx "$1"
	ORIGIN_URL=http://127.0.0.1:$PORT/
	ORIGIN_LOG=$NGINX_STATE/access.log
	: >>"$ORIGIN_LOG"
}

origin_lines() { # how many requests the origin logged so far
	wc -l <"$ORIGIN_LOG"
}

# origin_bytes [FROM_LINE]: body bytes the origin sent for files (GETs answered 200 or 206 of
# URIs not ending in /: directory listings and the probe for a .ferry-manifest are left out) in
# the requests it logged after line FROM_LINE (default 0).
origin_bytes() {
	awk -v from="${1:-0}" 'NR > from {
		m = $6; gsub(/"/, "", m)
		if (m == "GET" && $7 !~ /\/$/ && $7 != "/.ferry-manifest" && ($9 == 200 || $9 == 206))
			n += $10
	} END { print n + 0 }' "$ORIGIN_LOG"
}

# origin_ranges [FROM_LINE]: "URI STATUS BYTES" of each such request, one a line.
origin_ranges() {
	awk -v from="${1:-0}" 'NR > from {
		m = $6; gsub(/"/, "", m)
		if (m == "GET" && $7 !~ /\/$/ && $7 != "/.ferry-manifest") print $7, $9, $10
	}' "$ORIGIN_LOG"
}

# node_mount I PREFIX [options...]: mounts the origin at $T/node$I with the cache dir
# $T/cache$I (TIER_CACHE_TAG appended, for fresh caches) and the tier s3://ferry-tier/PREFIX.
node_mount() {
	local i=$1 prefix=$2
	shift 2
	mount_ferry "$ORIGIN_URL" "$T/node$i" --cache-dir "$T/cache$i${TIER_CACHE_TAG:-}" \
		--chunk-size "$TIER_CHUNK_BYTES" --shared-cache "s3://$TIER_BUCKET/$prefix" \
		--shared-endpoint "$S3_ENDPOINT" --shared-region us-east-1 "$@"
}

# tier_stat MOUNTPOINT FIELD...: the fields' values from `ferry stat --json`, one a line ("" for
# a field it does not have); fails the test when ferry stat fails.
tier_stat() {
	local mnt=$1
	shift
	timeout 30 "$FERRY" stat "$mnt" --json >"$T/.tier_stat.json" ||
		fail "ferry stat --json $mnt failed"
	"$PY" - "$T/.tier_stat.json" "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def find(d, k):
    if isinstance(d, dict):
        if k in d:
            return d[k]
        for v in d.values():
            r = find(v, k)
            if r is not None:
                return r
    return None
for k in sys.argv[2:]:
    v = find(d, k)
    print("" if v is None else v)
PY
}

# tier_need_stats MOUNTPOINT: FAILs unless ferry stat --json has every field of the interface.
tier_need_stats() {
	local v missing=
	local fields=(tier_state tier_hits tier_bytes tier_misses tier_rejected tier_errors
		tier_puts tier_put_bytes tier_puts_dropped)
	local i=0
	while read -r v; do
		[ -n "$v" ] || missing+=" ${fields[i]}"
		i=$((i + 1))
	done < <(tier_stat "$1" "${fields[@]}")
	[ -z "$missing" ] || fail "ferry stat --json has no$missing"
}

# tier_wait_drained MOUNTPOINT [SECONDS]: waits until the node's background PUTs to the tier
# are done: tier_put_queued is 0 where the daemon reports it, else its tier_puts,
# tier_puts_dropped and tier_errors have not moved for 2 s. Fails after SECONDS (default 60).
tier_wait_drained() {
	local mnt=$1 limit=${2:-60} q puts dropped errors last="" now same=0 start=$SECONDS
	while [ $((SECONDS - start)) -lt "$limit" ]; do
		{
			read -r q
			read -r puts
			read -r dropped
			read -r errors
		} < <(tier_stat "$mnt" tier_put_queued tier_puts tier_puts_dropped tier_errors)
		if [ -n "$q" ]; then
			[ "$q" = 0 ] && return 0
		else
			now="$puts $dropped $errors"
			if [ "$now" = "$last" ]; then
				same=$((same + 1))
				[ "$same" -ge 10 ] && return 0
			else
				same=0
				last=$now
			fi
		fi
		sleep 0.2
	done
	fail "$mnt: tier PUTs still queued after $limit s (tier_put_queued ${q:-absent})"
}

# tier_wait_state MOUNTPOINT STATE SECONDS [CMD...]: waits until tier_state is STATE, running
# CMD (e.g. a read that makes the daemon try the tier) before each look; fails after SECONDS.
tier_wait_state() {
	local mnt=$1 want=$2 limit=$3 s start=$SECONDS
	shift 3
	while :; do
		[ $# -gt 0 ] && "$@"
		s=$(tier_stat "$mnt" tier_state)
		[ "$s" = "$want" ] && return 0
		[ $((SECONDS - start)) -lt "$limit" ] || break
		sleep 0.5
	done
	fail "$mnt: tier_state is '$s' after $limit s, want '$want'"
}

# ratio A B: A / B to two places.
ratio() {
	"$PY" -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"
}
