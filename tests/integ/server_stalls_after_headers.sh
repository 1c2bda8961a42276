#!/usr/bin/env bash
# A server that sends a chunk GET's headers and then nothing. ferry gives up on a transfer
# that moves under 1 KiB/s for its low-speed time (30 s, fs/remote/net.c) and tries again:
#  - one stalled GET, then a server that answers: the read returns the source's bytes, within
#    the low-speed time and a margin;
#  - every GET stalled, a reader waiting: `ferry umount --force` unmounts cleanly within a bounded time,
#    the waiting reader gets an error (no hang, no wrong bytes), and the daemon is gone.
# (A read through a server that stalls every GET failing with EIO within its bound is
# server_stalls_every_get_read_fails_in_bounded_time.sh: it takes minutes.)
. "$(dirname "$0")/lib.sh"
need_fuse
LOW_SPEED_S=30
make_tree "$T/src" once.bin:1M waits.bin:1M
start_faultserver "$T/src"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache" --dir-readahead 0

# read_one PATH: one 64 KiB read at 0, no readahead; prints "right", "WRONG" or the error.
cat >"$T/read_one.py" <<'PY'
import os, sys
path, ref = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
try:
    got = os.pread(fd, 65536, 0)
except OSError as e:
    print("error", e, flush=True)
    sys.exit(3)
want = open(ref, "rb").read(65536)
print("right" if got == want else "WRONG BYTES", flush=True)
sys.exit(0 if got == want else 1)
PY

failed=""
log "one stalled GET, then the server answers"
# The next file GET is the second since this reset: it stalls; the one after is served.
fault_set "mode=stallheaders&every=2"
curl -sf -o /dev/null -r 0-0 "$FAULT_URL/waits.bin" || fail "the warm-up GET failed"
bound=$((LOW_SPEED_S + 20))
t0=$(date +%s)
timeout -k 5 "$bound" "$PY" "$T/read_one.py" "$T/mnt/once.bin" "$T/src/once.bin" && rc=0 || rc=$?
elapsed=$(($(date +%s) - t0))
log "after ${elapsed} s: rc $rc"
[ "$(fault_count_faulted)" -ge 1 ] || fail "no GET stalled"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "FAILED: the read still waited after $bound s (a stalled GET is never given up)" >&2
	failed="$failed stall-once"
elif [ "$rc" -ne 0 ]; then
	echo "FAILED: the read after one stalled GET did not return the source's bytes" >&2
	failed="$failed stall-once"
fi

log "every GET stalls, a reader waits, ferry umount --force"
fault_set "mode=stallheaders&every=1"
# The daemon of this mount (its command line ends with this test's own mountpoint).
daemon_pids=$(pgrep -f -- "mount .*$T/mnt\$" || true)
[ -n "$daemon_pids" ] || fail "no daemon found for $T/mnt"
timeout -k 5 60 "$PY" "$T/read_one.py" "$T/mnt/waits.bin" "$T/src/waits.bin" \
	>"$T/reader.out" 2>&1 &
reader=$!
for _ in $(seq 100); do
	[ "$(fault_count)" -ge 1 ] && break
	sleep 0.1
done
[ "$(fault_count)" -ge 1 ] || fail "the reader's GET never reached the server"
sleep 1
kill -0 "$reader" 2>/dev/null || fail "the reader did not wait: $(cat "$T/reader.out")"
t0=$(date +%s)
# A plain umount refuses a busy mount (with one line that names --force); --force must not.
timeout -k 5 20 "$FERRY" umount "$T/mnt" >"$T/umount-plain.out" 2>&1 &&
	fail "a plain ferry umount unmounted a mount with a file in use"
grep -q -- '--force' "$T/umount-plain.out" || fail "the refusal does not name --force: $(cat "$T/umount-plain.out")"
timeout -k 5 20 "$FERRY" umount --force "$T/mnt" >"$T/umount.out" 2>&1 && rc=0 || rc=$?
log "ferry umount: rc $rc after $(($(date +%s) - t0)) s: $(tr '\n' ' ' <"$T/umount.out")"
[ "$rc" -eq 0 ] || { echo "FAILED: ferry umount with a reader waiting: rc $rc" >&2
	failed="$failed umount"; }
# The reader must end with an error, soon after the unmount.
for _ in $(seq 200); do
	kill -0 "$reader" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$reader" 2>/dev/null; then
	echo "FAILED: the reader still waits 20 s after ferry umount" >&2
	failed="$failed reader-hangs"
	# Free the reader: a lazy unmount, then the daemon ended (by its pid), which aborts
	# the FUSE connection.
	fusermount3 -uz "$T/mnt" 2>/dev/null
	for p in $daemon_pids; do
		kill "$p" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$p" 2>/dev/null && { echo "FAILED: the daemon ($p) outlives SIGTERM by 5 s" >&2
			failed="$failed daemon-ignores-sigterm"; kill -KILL "$p"; }
	done
fi
wait "$reader" && rc=0 || rc=$?
log "the reader: rc $rc: $(cat "$T/reader.out")"
[ "$rc" -ne 1 ] || fail "the waiting reader got WRONG bytes"
if is_mounted "$T/mnt"; then
	echo "FAILED: still mounted" >&2
	failed="$failed still-mounted"
	fusermount3 -uz "$T/mnt" 2>/dev/null
fi
for p in $daemon_pids; do
	for _ in $(seq 100); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$p" 2>/dev/null && { echo "FAILED: the daemon ($p) is still running" >&2
		failed="$failed daemon-left"; kill "$p"; }
done
[ -z "$failed" ] || fail "failed:$failed (see above)"
pass
