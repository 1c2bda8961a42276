#!/usr/bin/env bash
# Training on three "nodes": `mpirun -np 3` where each rank runs in a mount namespace of its own
# (unshare -m) with its own ferry mount of the nginx origin at the same path, its own cache
# directory and one shared tier (radosgw). Rank 0 warms the tier first (`ferry warm`, which
# waits for the tier's PUTs); ranks 1 and 2 mount once it has. The run equals the same
# three-rank run on one node reading the source files (losses, lr, grad norms and validation
# losses in log.csv bit for bit, the final weights byte for byte: the samples are the same for
# any world size, but a one-rank run sums gradients in another order, docs/train.md, so it is
# not the bit-exact reference), and the origin sends
# the shards about once (at most 1.05 x their bytes; nginx's access log).
. "$(dirname "$0")/train_lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
need_mpi
need_cmd unshare
[ "$(id -u)" = 0 ] || skip "unshare -m needs root"
unshare -m --propagation private true 2>/dev/null || skip "no private mount namespaces here"
tier_setup
make_shards "$T/src"
rm -f "$T/src/corpus.txt"
origin_serve "$T/src"
total=$(dataset_bytes "$T/src")
args=(--layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2 --total-batch-tokens 192 --steps 6
	--warmup 1 --seed 7 --eval-every 3 --val-batches 2 --ckpt-every 6 --threads 1)
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np 3)

log "the reference: three ranks on one node, on the source files"
timeout 120 "${mpirun[@]}" "$FERRY" train --data "$T/src/train_*.bin" --val "$T/src/val_*.bin" \
	"${args[@]}" --out "$T/run1" >"$T/run1.out" 2>&1 ||
	{ tail -20 "$T/run1.out" >&2; fail "the reference run failed"; }

# Each rank: a private mount namespace, the mount at $T/mnt (the same path for all), its own
# cache; rank 0 warms the tier, the others wait for it; ferry train; the mount goes with it.
cat >"$T/rank.sh" <<'RANK'
set -u
r=${OMPI_COMM_WORLD_RANK:?not under Open MPI}
mnt=$T/mnt
if [ "$r" != 0 ]; then
	for _ in $(seq 1200); do [ -e "$T/warmed" ] && break; sleep 0.1; done
	[ -e "$T/warmed" ] || { echo "rank $r: rank 0 did not warm the tier in 120 s"; exit 1; }
fi
timeout 60 "$FERRY" mount --cache-dir "$T/cache.$r" --chunk-size 64K \
	--shared-cache "s3://$TIER_BUCKET/train/" --shared-endpoint "$S3_ENDPOINT" \
	"$ORIGIN_URL" "$mnt" || { echo "rank $r: mount failed"; exit 1; }
trap '"$FERRY" umount "$mnt" 2>/dev/null || umount -l "$mnt"' EXIT
if [ "$r" = 0 ]; then
	timeout 120 "$FERRY" warm "$mnt" >"$T/warm.out" 2>&1 || { echo "rank 0: warm failed"; exit 1; }
	touch "$T/warmed"
fi
"$FERRY" train --data "$mnt/train_*.bin" --val "$mnt/val_*.bin" "$@" --out "$T/run3"
rc=$?
"$FERRY" stat "$mnt" --json >"$T/stat.$r.json" 2>/dev/null
exit $rc
RANK
mkdir -p "$T/mnt"
log "three ranks, each in its own mount namespace with its own mount at $T/mnt"
from=$(origin_lines)
export T FERRY TIER_BUCKET S3_ENDPOINT ORIGIN_URL
timeout 300 "${mpirun[@]}" -x T -x FERRY -x TIER_BUCKET -x S3_ENDPOINT -x ORIGIN_URL \
	-x AWS_ACCESS_KEY_ID -x AWS_SECRET_ACCESS_KEY -x AWS_REGION -x HOME \
	unshare -m --propagation private bash "$T/rank.sh" "${args[@]}" \
	>"$T/run3.out" 2>&1 || { tail -20 "$T/run3.out" >&2; fail "the three-rank run failed"; }
! is_mounted "$T/mnt" || fail "a rank's mount is seen outside its namespace"
[ -z "$(pgrep -f -- "$T/cache\.")" ] || fail "a rank's ferry daemon is still running"
got=$(origin_bytes "$from")
r=$(ratio "$got" "$total")
for i in 0 1 2; do
	[ -s "$T/stat.$i.json" ] || fail "rank $i wrote no ferry stat"
	log "rank $i: $("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
print("origin %d bytes, tier %s: %d hits, %d rejected, %d puts" % (d["bytes_fetched"],
      d["tier_state"], d["tier_hits"], d["tier_rejected"], d["tier_puts"]))' "$T/stat.$i.json")"
done
log "the origin sent $got bytes for $total bytes of shards: $r x"

# step, loss, lr, grad_norm, val_loss (ms, tokens/s and data wait are timings)
cols() { cut -d, -f1-4,8 "$1"; }
[ "$(cols "$T/run1/log.csv" | wc -l)" = 7 ] ||
	fail "the reference logged $(wc -l <"$T/run1/log.csv") lines, want 7"
diff <(cols "$T/run1/log.csv") <(cols "$T/run3/log.csv") >&2 ||
	fail "three ranks through their mounts and the tier trained otherwise than on the source files"
cmp "$T/run1/model_00000006.bin" "$T/run3/model_00000006.bin" || fail "the final weights differ"
log "log.csv and the final weights equal the reference run's"
[ $((got * 100)) -le $((total * 105)) ] ||
	fail "the origin sent $got bytes, $r x the shards' $total (bar: 1.05)"
pass "3 ranks through 3 mounts and one tier train as on the source files;" \
	"the origin sent $r x the data"
