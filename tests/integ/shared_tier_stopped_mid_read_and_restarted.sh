#!/usr/bin/env bash
# The shared tier (radosgw) goes away while a node reads, and comes back: node 1 fills the
# tier; node 2 reads chunks of a file in random order, some from the tier, and radosgw is
# killed in the middle of its reads. Every byte read stays right, the mount stays up, and
# tier_state turns "down". radosgw starts again (same port, same objects); once the circuit
# breaker tries the tier again (30 s) tier_state is "up" and the chunks left are tier hits again.
# Last, radosgw is frozen (SIGSTOP: connections accepted, nothing answered): reads still come
# back right within the tier's short timeouts.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
. "$FERRY_SRC/tests/lib/tier.sh"
tier_setup
src=$T/src
tier_dataset "$src"
origin_serve "$src"
C=$TIER_CHUNK_BYTES
nr_big=$(($(stat -c %s "$src/big.bin") / C))

log "node 1 fills the tier"
node_mount 1 stop/
same_tree "$src" "$T/node1" >/dev/null || fail "node 1: bytes differ from the source"
tier_wait_drained "$T/node1"
umount_ferry "$T/node1"

# read_chunks PAUSE INDEX...: reads two 4 KiB pieces of each of those chunks of big.bin through
# node 2, compared with the source (small reads far apart, so that neither the kernel nor the
# daemon reads ahead into other chunks: each chunk is asked of the tier when its turn comes);
# appends "INDEX SECONDS" to $T/progress for each; fails on the first wrong byte or error.
cat >"$T/read_chunks.py" <<'PY'
import os, sys, time
mnt, src, rel = sys.argv[1:4]
chunk, pause = int(sys.argv[4]), float(sys.argv[5])
fd = os.open(os.path.join(mnt, rel), os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
with open(os.path.join(src, rel), "rb") as f:
    for i in map(int, sys.argv[6:]):
        t0 = time.monotonic()
        for off in (i * chunk + chunk - 5000, i * chunk + 1000):
            f.seek(off)
            want = f.read(4096)
            got = os.pread(fd, 4096, off)
            if got != want:
                sys.exit("%s at %d (chunk %d): %d bytes read, differ from the source" %
                         (rel, off, i, len(got)))
        t = time.monotonic() - t0
        with open(os.environ["PROGRESS"], "a") as p:
            p.write("%d %.3f\n" % (i, t))
        time.sleep(pause)
PY
export PROGRESS=$T/progress
: >"$PROGRESS"
read_chunks() { # pause index...
	"$PY" "$T/read_chunks.py" "$T/node2" "$src" big.bin "$C" "$@"
}
# Small files (one chunk each) not read yet: each read of one makes the daemon ask the tier.
next_small=0
read_a_small_file() {
	local f
	f=$(printf 's%03d.bin' "$next_small")
	next_small=$((next_small + 1))
	[ "$next_small" -le 100 ] || fail "no small file left to read"
	local rc=0
	timeout 30 cmp -s "$src/small/$f" "$T/node2/small/$f" || rc=$?
	[ "$rc" != 124 ] || fail "node 2: a read of small/$f still hangs after 30 s"
	[ "$rc" = 0 ] || fail "node 2: small/$f differs from the source or failed to read"
}

mapfile -t order < <(seq 0 $((nr_big - 1)) | shuf --random-source=<(yes))
log "node 2 reads ${order[*]:0:4} of big.bin with the tier up"
node_mount 2 stop/ --dir-readahead 0
read_chunks 0 "${order[@]:0:4}" || fail "node 2: reads with the tier up failed"
hits=$(tier_stat "$T/node2" tier_hits)
[ "$hits" -ge 4 ] || fail "node 2: $hits tier hits after reading 4 chunks the tier holds"

log "node 2 reads ${order[*]:4:10} one by one; radosgw is killed after the second"
read_chunks 0.3 "${order[@]:4:10}" &
reader=$!
for _ in $(seq 100); do
	[ "$(wc -l <"$PROGRESS")" -ge 6 ] && break
	sleep 0.05
done
bash "$S3SERVER_SH" stop-rgw "$S3_STATE" || fail "could not stop radosgw"
t_stop=$SECONDS
wait "$reader" || fail "node 2: a read failed or was wrong while the tier went away"
is_mounted "$T/node2" || fail "node 2 is no longer mounted"
tier_wait_state "$T/node2" down 10 read_a_small_file
log "tier_state down; reads during the outage took (s):" \
	"$(tail -n 8 "$PROGRESS" | awk '{ print $2 }' | paste -sd' ')"
errors=$(tier_stat "$T/node2" tier_errors)
[ "$errors" -ge 1 ] || fail "tier_errors is $errors after the tier went away"

log "radosgw starts again; waiting for the breaker to try the tier (reading a small file a try)"
bash "$S3SERVER_SH" start-rgw "$S3_STATE" || fail "radosgw did not start again"
tier_wait_state "$T/node2" up 50 read_a_small_file
log "tier_state up again $((SECONDS - t_stop)) s after the tier went away"
hits0=$(tier_stat "$T/node2" tier_hits)
read_chunks 0 "${order[@]:14}" || fail "node 2: reads after the tier came back failed"
hits1=$(tier_stat "$T/node2" tier_hits)
log "tier hits $hits0 -> $hits1 over the last $((nr_big - 14)) chunks"
[ $((hits1 - hits0)) -ge $((nr_big - 14)) ] ||
	fail "tier hits grew by $((hits1 - hits0)) over $((nr_big - 14)) chunks the tier holds"

# The tier's GETs give up after 10 s (TIER_GET_TIMEOUT_MS): 4 readers at once wait that long at
# most, and their 3 timeouts open the breaker, after which reads do not wait for the tier.
log "radosgw frozen (SIGSTOP): 4 small files read at once, right, each within 15 s"
rgw_pid=$(cat "$S3_STATE/run/client.rgw.ferry.pid")
kill -STOP "$rgw_pid"
on_exit "kill -CONT $rgw_pid 2>/dev/null"
t0=$SECONDS
pids=()
for _ in 1 2 3 4; do
	read_a_small_file &
	pids+=($!)
	next_small=$((next_small + 1))
done
for p in "${pids[@]}"; do
	wait "$p" || fail "a read with the tier frozen failed"
done
[ $((SECONDS - t0)) -le 15 ] || fail "4 reads with the tier frozen took $((SECONDS - t0)) s"
log "4 reads with the tier frozen took $((SECONDS - t0)) s"
tier_wait_state "$T/node2" down 5 read_a_small_file
t0=$SECONDS
for _ in 1 2 3 4 5; do read_a_small_file; done
[ $((SECONDS - t0)) -le 3 ] ||
	fail "5 reads with the tier frozen and its breaker open took $((SECONDS - t0)) s"
kill -CONT "$rgw_pid"
same_tree "$src" "$T/node2" >/dev/null || fail "node 2: bytes differ from the source at the end"
is_mounted "$T/node2" || fail "node 2 is no longer mounted"
pass "tier down and back: reads right throughout, tier hits again after $((SECONDS - t_stop)) s"
