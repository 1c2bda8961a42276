#!/usr/bin/env bash
# The shared chunk tier (issue 11) in one run: nginx on loopback is the origin (its access log
# counts the body bytes it sent), radosgw on loopback the tier. A node reading straight from the
# origin (no tier) gives the reference cold read; then nodes 1, 2, 3 (fresh cache directories,
# one tier prefix) read the same dataset one after the other, each after the one before has
# put its chunks into the tier. Printed as a markdown table: each node's cold read time against
# the origin-only node's, the origin's bytes for it, and the origin's bytes so far over the
# dataset's (the bar: 1 for any number of nodes).
# Sizes: BENCH_TIER_MB (256: one file), BENCH_TIER_NR_SMALL (500 files) of up to
# BENCH_TIER_SMALL_KB (64) KiB each; BENCH_MOUNT_OPTS adds options to every `ferry mount` (e.g.
# --chunk-size 1M; default 8 MiB chunks). Needs root for drop_caches between nodes (else n/a).
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
big_mb=${BENCH_TIER_MB:-256}
nr_small=${BENCH_TIER_NR_SMALL:-500}
small_kb=${BENCH_TIER_SMALL_KB:-64}
read -r -a mount_opts <<<"${BENCH_MOUNT_OPTS:-}"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
# The OSD holds the tier in memory: room for the dataset three times over, and 1 GiB.
S3SERVER_MEMSTORE_BYTES=$((((big_mb + nr_small * small_kb / 1024) * 3 + 1024) << 20))
export S3SERVER_MEMSTORE_BYTES

now() { date +%s.%N; }
secs() { "$PY" -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$@"; }
can_drop=0
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && can_drop=1

tier_setup
src=$T/src
log "dataset: a $big_mb MiB file and $nr_small files of 1 B to $small_kb KiB"
make_tree "$src" "big.bin:${big_mb}M"
"$PY" - "$src/small" "$nr_small" "$small_kb" <<'PY'
import os, random, sys
root, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
rng = random.Random(n)
for i in range(n):
    with open(os.path.join(root, "s%05d.bin" % i), "wb") as f:
        f.write(os.urandom(rng.randint(1, kb << 10)))
PY
total=$(dataset_bytes "$src")
origin_serve "$src"
cat "$src/big.bin" "$src"/small/* >/dev/null # the origin reads from its page cache
(cd "$src" && find . -type f | sort | xargs sha256sum) >"$T/want.sha"

# read_node MOUNTPOINT: prints the seconds a cold read of the whole dataset takes (dd of the
# big file, cat of the small ones, in listing order), after checking every byte.
read_node() {
	local mnt=$1 t0 t1
	[ "$can_drop" = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
	t0=$(now)
	dd if="$mnt/big.bin" of=/dev/null bs=1M status=none || fail "dd of big.bin on $mnt failed"
	(cd "$mnt/small" && cat -- * >/dev/null) || fail "cat of the small files on $mnt failed"
	t1=$(now)
	(cd "$mnt" && sha256sum -c --quiet "$T/want.sha") >&2 || fail "$mnt: bytes differ"
	secs "$t0" "$t1"
}

declare -A TIME OBYTES HITS DRAIN CUM DROPPED REJ
log "the reference: a node reading straight from the origin (no tier)"
mount_ferry "$ORIGIN_URL" "$T/direct" --cache-dir "$T/cache-direct" "${mount_opts[@]}"
from=$(origin_lines)
TIME[0]=$(read_node "$T/direct")
OBYTES[0]=$(origin_bytes "$from")
umount_ferry "$T/direct"

cum=0
for i in 1 2 3; do
	log "node $i: a fresh cache, the shared tier"
	mount_ferry "$ORIGIN_URL" "$T/node$i" --cache-dir "$T/cache$i" --shared-cache \
		"s3://$TIER_BUCKET/bench/" --shared-endpoint "$S3_ENDPOINT" "${mount_opts[@]}"
	from=$(origin_lines)
	TIME[$i]=$(read_node "$T/node$i")
	t0=$(now)
	tier_wait_drained "$T/node$i" 300
	DRAIN[$i]=$(secs "$t0" "$(now)")
	OBYTES[$i]=$(origin_bytes "$from")
	cum=$((cum + OBYTES[$i]))
	CUM[$i]=$cum
	read -r "HITS[$i]" "DROPPED[$i]" "REJ[$i]" < <(tier_stat "$T/node$i" tier_hits \
		tier_puts_dropped tier_rejected | paste -sd' ')
	[ "${REJ[$i]}" = 0 ] || fail "node $i: ${REJ[$i]} tier objects rejected, none was damaged"
	umount_ferry "$T/node$i"
done

mbps() { "$PY" -c 'import sys; print("%.0f" % (float(sys.argv[1]) / float(sys.argv[2]) / 1e6))' "$@"; }
echo
echo "ferry bench_tier: $(nproc) cores, a $big_mb MiB file + $nr_small small files = $total bytes;" \
	"origin nginx, tier radosgw, both on loopback${BENCH_MOUNT_OPTS:+; mount options: $BENCH_MOUNT_OPTS}"
echo "load average (1, 5, 15 min): $load_at_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| node | cold read s | MB/s | time vs origin-only node | origin bytes | origin bytes so far ÷ dataset | tier hits | PUTs dropped | drain s |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '| origin only (no tier) | %s | %s | 1.00 | %s | %s | - | - | - |\n' "${TIME[0]}" \
	"$(mbps "$total" "${TIME[0]}")" "${OBYTES[0]}" "$(ratio "${OBYTES[0]}" "$total")"
for i in 1 2 3; do
	printf '| %d of 3, tier | %s | %s | %s | %s | %s (%d node%s) | %s | %s | %s |\n' "$i" \
		"${TIME[$i]}" "$(mbps "$total" "${TIME[$i]}")" "$(ratio "${TIME[$i]}" "${TIME[0]}")" \
		"${OBYTES[$i]}" "$(ratio "${CUM[$i]}" "$total")" "$i" "$([ "$i" = 1 ] || echo s)" \
		"${HITS[$i]}" "${DROPPED[$i]}" "${DRAIN[$i]}"
done
echo
echo "bar (issue 11): origin bytes so far ÷ dataset <= 1.05 for 1, 2 and 3 nodes; drain s: the wait"
echo "  for the node's tier PUT queue to empty after its read (not in its read time)"
[ "$can_drop" = 1 ] || echo "(not root: the page cache was not dropped between nodes)"
exit 0
