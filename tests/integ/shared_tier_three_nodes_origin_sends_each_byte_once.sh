#!/usr/bin/env bash
# Three nodes (ferry mounts with their own cache directories and one shared tier, a bucket on
# radosgw) read a dataset (256 MiB and 500 small files, as in issue 11) from an nginx origin
# one after the other, each waiting until the one before has put its chunks into the tier: the
# origin sends each byte at most once (the body bytes in its access log, listings left out, at
# most 1.05 x the dataset), every node's bytes equal the source, and the tier then holds one
# verified object per chunk (key layout, metadata, bytes and checksum checked with botocore).
# Node 1 has --shared-write-memory 1M, so the PUT queue holds one chunk and the rest wait by
# name and are read back from its cache: none may be dropped. Then the same three with fresh
# caches and a fresh tier prefix read at once, racing on the same chunks: every byte right;
# the origin's ratio is printed (no bar on it: two nodes missing a chunk at once may both
# fetch it).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
tier_setup
# The issue's dataset: a 256 MiB file and 500 small files (a node reads it faster than the tier
# takes writes, the case the by-name PUTs are for).
TIER_BIG_MB=${TIER_BIG_MB:-256} TIER_NR_SMALL=${TIER_NR_SMALL:-500}
src=$T/src
tier_dataset "$src"
origin_serve "$src"
total=$(dataset_bytes "$src")
nr_chunks=$(dataset_chunks "$src")
log "dataset: $total bytes in $nr_chunks chunks of $TIER_CHUNK_BYTES"

log "one after the other"
sum=0
for i in 1 2 3; do
	from=$(origin_lines)
	if [ "$i" = 1 ]; then node_mount 1 seq/ --shared-write-memory 1M; else node_mount "$i" seq/; fi
	[ "$i" = 1 ] && tier_need_stats "$T/node1"
	same_tree "$src" "$T/node$i" >/dev/null || fail "node $i: bytes differ from the source"
	tier_wait_drained "$T/node$i"
	got=$(origin_bytes "$from")
	sum=$((sum + got))
	read -r state hits tbytes rejected errors puts dropped fetched < <(tier_stat "$T/node$i" \
		tier_state tier_hits tier_bytes tier_rejected tier_errors tier_puts tier_puts_dropped \
		bytes_fetched | paste -sd' ')
	log "node $i: origin sent $got bytes (bytes_fetched $fetched); tier $state: $hits hits," \
		"$tbytes bytes, $rejected rejected, $errors errors, $puts puts, $dropped dropped"
	[ "$state" = up ] || fail "node $i: tier_state '$state', want 'up'"
	[ "$rejected" = 0 ] || fail "node $i: $rejected tier objects rejected, none was damaged"
	if [ "$i" = 1 ]; then
		[ "$puts" = "$nr_chunks" ] && [ "$dropped" = 0 ] ||
			fail "node 1 put $puts chunks into the tier ($dropped dropped), want $nr_chunks"
		tier_objects verify "$TIER_BUCKET" seq/ "$src" "$TIER_CHUNK_BYTES" ||
			fail "the tier's objects after node 1 do not verify (see above)"
	else
		[ "$tbytes" = "$total" ] || fail "node $i: $tbytes bytes from the tier, want $total"
		[ "$hits" = "$nr_chunks" ] || fail "node $i: $hits tier hits, want $nr_chunks"
	fi
done
"$FERRY" stat "$T/node3" >"$T/stat.txt" || fail "ferry stat failed"
grep -qi tier "$T/stat.txt" || { cat "$T/stat.txt" >&2; fail "ferry stat prints no tier line"; }
r=$(ratio "$sum" "$total")
log "three nodes one after the other: the origin sent $sum bytes, $r x the dataset"
[ $((sum * 100)) -le $((total * 105)) ] ||
	fail "the origin sent $sum bytes for three nodes, $r x the dataset (bar: 1.05)"
for i in 1 2 3; do umount_ferry "$T/node$i"; done

log "at once, fresh caches and a fresh tier prefix"
TIER_CACHE_TAG=.race
from=$(origin_lines)
for i in 1 2 3; do node_mount "$i" race/; done
for i in 1 2 3; do
	same_tree "$src" "$T/node$i" >"$T/race$i.out" 2>&1 &
	echo $! >"$T/race$i.pid"
done
for i in 1 2 3; do
	wait "$(cat "$T/race$i.pid")" ||
		{ cat "$T/race$i.out" >&2; fail "node $i (at once): bytes differ"; }
done
for i in 1 2 3; do tier_wait_drained "$T/node$i"; done
got=$(origin_bytes "$from")
r_race=$(ratio "$got" "$total")
for i in 1 2 3; do
	log "node $i (at once): tier $(tier_stat "$T/node$i" tier_state tier_hits tier_rejected \
		tier_puts tier_puts_dropped | paste -sd' ') (state hits rejected puts dropped)"
done
log "three nodes at once: the origin sent $got bytes, $r_race x the dataset"
log "and a fourth look, node 1 again from its cold cache of the race tier: right bytes"
umount_ferry "$T/node1"
TIER_CACHE_TAG=.fourth node_mount 1 race/
from=$(origin_lines)
same_tree "$src" "$T/node1" >/dev/null || fail "a fresh node after the race: bytes differ"
tb=$(tier_stat "$T/node1" tier_bytes)
[ "$tb" = "$total" ] || fail "a fresh node after the race: $tb bytes from the tier, want $total"
[ "$(origin_bytes "$from")" = 0 ] || fail "a fresh node after the race: the origin sent bytes"
tier_objects verify "$TIER_BUCKET" race/ "$src" "$TIER_CHUNK_BYTES" ||
	fail "the tier's objects after the race do not verify (see above)"
pass "origin sent $r x the dataset for three nodes one after the other, $r_race x at once"
