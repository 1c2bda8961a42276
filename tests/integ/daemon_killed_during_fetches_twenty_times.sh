#!/usr/bin/env bash
# kill -9 of the daemon while reads (and so fetches) are in flight, then a remount of the same
# cache, twenty times: every remount comes up and serves the source's bytes, no read ever
# returns other bytes (before or after a kill), and after a clean remount no temporary file
# is left orphaned in the cache. A small --cache-size keeps evicting, so fetches, fills and
# evictions are all in flight when the daemon dies. Every other round the daemon is killed
# instead a few ms into an unmount, while it writes its maps and listings.
. "$(dirname "$0")/lib.sh"
need_fuse
many_files "$T/src" 120 700000
make_tree "$T/src" big.bin:6M
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"
opts=(--chunk-size 256K --cache-size 12M)

# The readers: THREADS threads read random ranges of random files until the mount dies or
# SECONDS pass; a read that returns other bytes than the source's writes it to WRONG and the
# reader exits 1. Errors (the daemon is gone: ENOTCONN, EIO) end a thread quietly.
# An empty read where the source has bytes counts as wrong.
cat >"$T/reader.py" <<'PY'
import os, random, sys, threading, time
src, mnt, seed, secs, wrong = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
names = sorted(os.listdir(src))
refs = {n: open(os.path.join(src, n), "rb").read() for n in names}
bad, nr_reads = [], [0]
def run(k):
    rng = random.Random(seed * 100 + k)
    end = time.time() + secs
    while time.time() < end:
        n = rng.choice(names)
        ref = refs[n]
        off = rng.randrange(len(ref)) if ref else 0
        ln = rng.choice((4096, 65536, 300000, 1 << 20))
        try:
            fd = os.open(os.path.join(mnt, n), os.O_RDONLY)
            try:
                got = os.pread(fd, ln, off)
            finally:
                os.close(fd)
        except OSError:
            return
        want = ref[off:off + ln]
        # A read the kill cuts short (the kernel splits it into several requests) returns
        # the part answered: a prefix of the source's bytes is right, and ends this thread.
        if got != want[:len(got)] or (not got and want):
            bad.append("%s: %d bytes at %d: WRONG BYTES (%d returned)" % (n, ln, off, len(got)))
            return
        if len(got) < len(want):
            return
        nr_reads[0] += 1
ts = [threading.Thread(target=run, args=(k,)) for k in range(6)]
for t in ts: t.start()
for t in ts: t.join()
if bad:
    open(wrong, "a").write("\n".join(bad) + "\n")
    sys.exit(1)
print(nr_reads[0])
PY

start=$(date +%s)
nr_reads=0 nr_hit=0 nr_tmp_seen=0
for i in $(seq 20); do
	mount_ferry "$url" "$T/mnt" "${opts[@]}"
	pid=$(ferry_daemon_pid "$T/mnt")
	# What was read before the kill reads right after the remount (fetched again or cached).
	reads_right_or_eio "$T/src" "$T/mnt" --strict big.bin f0000$((i % 10)) >/dev/null
	rc=0
	if [ $((i % 2)) = 1 ]; then
		# Killed while reads are in flight.
		timeout 30 "$PY" "$T/reader.py" "$T/src" "$T/mnt" "$i" 20 "$T/wrong" >"$T/reader.out" &
		reader=$!
		sleep "0.$((RANDOM % 5 + 2))"
		kill -9 "$pid" || fail "round $i: the daemon $pid was gone before the kill"
		wait "$reader" || rc=$?
	else
		# Killed while it writes what it cached (maps, listings) on its way out of an unmount.
		timeout 30 "$PY" "$T/reader.py" "$T/src" "$T/mnt" "$i" 0.4 "$T/wrong" >"$T/reader.out" ||
			rc=$?
		fusermount3 -u "$T/mnt" 2>/dev/null &
		sleep "0.0$((RANDOM % 10))"
		kill -9 "$pid" 2>/dev/null && nr_hit=$((nr_hit + 1))
		wait $! || true
	fi
	[ -s "$T/wrong" ] && { cat "$T/wrong" >&2; fail "round $i: a read returned wrong bytes"; }
	[ "$rc" -eq 0 ] || fail "round $i: the readers exited $rc"
	nr_reads=$((nr_reads + $(cat "$T/reader.out")))
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && fail "round $i: daemon $pid outlived kill -9"
	nr_tmp_seen=$((nr_tmp_seen + $(cache_temp_files "$T/cache" | wc -l)))
	if is_mounted "$T/mnt"; then
		fusermount3 -uz "$T/mnt" 2>/dev/null || umount -l "$T/mnt" ||
			fail "round $i: cannot unmount the dead mount"
	fi
done
log "20 kills ($nr_hit of 10 in unmounts found the daemon still running), $nr_reads reads" \
	"right before them, $nr_tmp_seen temporary files seen just after them, $(($(date +%s) - start)) s"

log "a clean remount serves the source's bytes"
mount_ferry "$url" "$T/mnt" "${opts[@]}"
timed_same_tree 120 "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
mount_ferry "$url" "$T/mnt" "${opts[@]}"
umount_ferry "$T/mnt"
cache_temp_files "$T/cache" >"$T/orphans"
if [ -s "$T/orphans" ]; then
	sed "s|$T/||; s/^/  /" "$T/orphans" | head -20 >&2
	fail "$(wc -l <"$T/orphans") temporary files left in the cache after a clean remount"
fi
pass
