#!/usr/bin/env bash
# A node fills the shared tier (a bucket on radosgw); then tier objects are overwritten behind
# ferry's back, with botocore: other bytes under the same metadata; the same bytes under other
# metadata (ferry-offset, -version, -source, -path, -length, -xxh3, -format changed, or none at
# all); truncated (metadata kept, or made to match the shorter bytes); longer; empty; another
# chunk's object copied over it with its metadata (of the same file, of another file at the same
# offset and length). A fresh node reads everything: its bytes equal the source's,
# tier_rejected counts each damaged object once, and the origin (nginx's access log) sent
# exactly the damaged chunks. Its PUTs then replace the damaged objects: a third node finds
# every object whole.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
tier_setup
src=$T/src
tier_dataset "$src"
origin_serve "$src"
nr_chunks=$(dataset_chunks "$src")
C=$TIER_CHUNK_BYTES

log "node 1 fills the tier"
node_mount 1 dmg/
same_tree "$src" "$T/node1" >/dev/null || fail "node 1: bytes differ from the source"
tier_wait_drained "$T/node1"
tier_objects verify "$TIER_BUCKET" dmg/ "$src" "$C" || fail "node 1's tier objects do not verify"
tier_objects list "$TIER_BUCKET" dmg/ >"$T/objects.tsv"

key_of() { # path offset: the tier key of that chunk
	local k
	k=$(awk -F'\t' -v p="$1" -v o="$2" '{ q = $3; sub(/^\//, "", q) } q == p && $4 == o { print $1 }' \
		"$T/objects.tsv")
	[ -n "$k" ] || fail "no tier object for $1 at $2"
	echo "$k"
}
length_of() { # path offset
	awk -F'\t' -v p="$1" -v o="$2" '{ q = $3; sub(/^\//, "", q) } q == p && $4 == o { print $5 }' \
		"$T/objects.tsv"
}

nr_damaged=0
damaged_bytes=0
damage() { # path offset mode args...: damages that chunk's object, counts it
	local path=$1 off=$2 key
	shift 2
	key=$(key_of "$path" "$off")
	tier_objects damage "$TIER_BUCKET" "$key" "$@" || fail "could not damage $key ($*)"
	nr_damaged=$((nr_damaged + 1))
	damaged_bytes=$((damaged_bytes + $(length_of "$path" "$off")))
	log "damaged $path at $off: $*"
}
damage big.bin $((1 * C)) bytes
damage big.bin $((2 * C)) meta offset $((3 * C))
damage big.bin $((3 * C)) meta offset +1
damage big.bin $((4 * C)) meta version other
damage big.bin $((5 * C)) meta source other
damage big.bin $((6 * C)) meta path small/s000.bin
damage big.bin $((7 * C)) meta length +1
damage big.bin $((8 * C)) meta xxh3 other
damage big.bin $((9 * C)) meta format 2
damage big.bin $((10 * C)) drop-meta
damage big.bin $((11 * C)) truncate
damage big.bin $((12 * C)) truncate-consistent
damage big.bin $((13 * C)) empty
damage big.bin $((16 * C)) append
damage big.bin $((14 * C)) copy-from "$(key_of big.bin $((15 * C)))"
damage big.bin $((23 * C)) copy-from "$(key_of big.bin $((22 * C)))"
damage odd/chunk+1.bin 0 copy-from "$(key_of big.bin 0)"
damage small/s001.bin 0 copy-from "$(key_of small/s002.bin 0)"
damage small/s003.bin 0 bytes
damage small/s004.bin 0 truncate-consistent

log "a fresh node reads everything: $nr_damaged damaged objects, $damaged_bytes bytes"
from=$(origin_lines)
node_mount 2 dmg/
same_tree "$src" "$T/node2" >/dev/null || fail "node 2: bytes differ from the source"
read -r state hits rejected fetched < <(tier_stat "$T/node2" tier_state tier_hits tier_rejected \
	bytes_fetched | paste -sd' ')
got=$(origin_bytes "$from")
log "node 2: tier $state, $hits hits, $rejected rejected; origin sent $got bytes" \
	"(bytes_fetched $fetched) for:"
origin_ranges "$from" | sort | uniq -c | sed 's/^/    /'
[ "$rejected" = "$nr_damaged" ] ||
	fail "node 2: tier_rejected $rejected, want $nr_damaged (one per damaged object)"
[ "$got" = "$damaged_bytes" ] ||
	fail "node 2: the origin sent $got bytes, want $damaged_bytes (the damaged chunks, once)"
[ "$hits" = $((nr_chunks - nr_damaged)) ] ||
	fail "node 2: $hits tier hits, want $((nr_chunks - nr_damaged)) (the undamaged chunks)"
[ "$state" = up ] || fail "node 2: tier_state '$state' after rejecting objects, want 'up'"
log "read again from node 2's cache: still right"
drop_caches
same_tree "$src" "$T/node2" >/dev/null || fail "node 2, from its cache: bytes differ"

# docs/ferry.md: the PUT of a chunk fetched from the origin replaces the bad object, so a
# third node finds every object whole.
tier_wait_drained "$T/node2"
from=$(origin_lines)
node_mount 3 dmg/
same_tree "$src" "$T/node3" >/dev/null || fail "node 3: bytes differ from the source"
rejected3=$(tier_stat "$T/node3" tier_rejected)
got3=$(origin_bytes "$from")
log "node 3 after node 2's puts: $rejected3 rejected, origin sent $got3 bytes"
[ "$rejected3" = 0 ] ||
	fail "node 3: $rejected3 rejected: node 2's PUTs did not replace the damaged objects"
[ "$got3" = 0 ] ||
	fail "node 3: the origin sent $got3 bytes: node 2's PUTs did not replace the damaged objects"
tier_objects verify "$TIER_BUCKET" dmg/ "$src" "$C" ||
	fail "the tier does not verify after node 2's PUTs"
pass "$nr_damaged damaged tier objects rejected, their $damaged_bytes bytes came from the origin"
