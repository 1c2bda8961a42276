#!/usr/bin/env bash
# A server that answers chunk reads with 5xx, a short body or a reset connection: a read
# through the mount returns EIO or the source's bytes, never other bytes; when every range
# read fails, reads fail with EIO, the error is counted, and the mount stays up.
# Server: tests/lib/faultserver.py DOCROOT --port-file F --mode 500|truncate|reset --every N
# (faults hit GETs of files, every Nth of them; index pages and HEADs are served; truncate
# announces the full length and sends half the body).
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a.bin:3M b.bin:1M c.bin:100K

# check_reads.py SRC MNT WANT: reads each file whole and at odd offsets; WANT is "eio"
# (every read must fail with EIO) or "eio-or-right" (each read is EIO or the source's bytes).
cat >"$T/check_reads.py" <<'PY'
import errno, os, sys
src, mnt, want = sys.argv[1:4]
nr_eio = nr_ok = 0
# Each failing read costs the daemon's retries with backoff (seconds), so fewer when all fail.
names = ["a.bin", "c.bin"] if want == "eio" else sorted(os.listdir(src))
for name in names:
    size = os.path.getsize(os.path.join(src, name))
    ref = open(os.path.join(src, name), "rb").read()
    reads = ((0, size), (size // 3, 70000), (size - 10, 4096), (12345, 1 << 20))
    for off, n in reads[:2] if want == "eio" else reads:
        fd = os.open(os.path.join(mnt, name), os.O_RDONLY)
        try:
            got = os.pread(fd, n, off)
        except OSError as e:
            if e.errno != errno.EIO:
                sys.exit("%s read %d at %d: %s, want EIO" % (name, n, off, e))
            nr_eio += 1
            continue
        finally:
            os.close(fd)
        if got != ref[off:off + n]:
            sys.exit("%s read %d at %d: WRONG BYTES (%d bytes returned)" % (name, n, off, len(got)))
        if want == "eio":
            sys.exit("%s read %d at %d succeeded from a server failing every range read" %
                     (name, n, off))
        nr_ok += 1
print("%d reads EIO, %d reads right" % (nr_eio, nr_ok))
PY

for mode in 500 truncate reset; do
	log "mode $mode, every range read"
	start_faultserver "$T/src" --mode "$mode" --every 1
	mount_ferry "http://127.0.0.1:$FPORT/" "$T/mnt-$mode" --chunk-size 1M \
		--cache-dir "$T/cache-$mode-1"
	timeout 120 "$PY" "$T/check_reads.py" "$T/src" "$T/mnt-$mode" eio ||
		fail "mode $mode: see above"
	ls "$T/mnt-$mode" >/dev/null || fail "mode $mode: the mount died"
	# docs/ferry.md: chunks that failed for good, and reads answered with an error.
	for k in fetch_errors read_errors; do
		[ "$(stat_json "$T/mnt-$mode" "$k")" -gt 0 ] || fail "mode $mode: no $k counted"
	done
	umount_ferry "$T/mnt-$mode"
	kill "$FAULT_PID"; wait "$FAULT_PID" 2>/dev/null || true

	log "mode $mode, every third range read"
	start_faultserver "$T/src" --mode "$mode" --every 3
	mount_ferry "http://127.0.0.1:$FPORT/" "$T/mnt-$mode" --chunk-size 1M \
		--cache-dir "$T/cache-$mode-3"
	timeout 120 "$PY" "$T/check_reads.py" "$T/src" "$T/mnt-$mode" eio-or-right ||
		fail "mode $mode every 3: see above"
	# The server faulted every third file GET: with 3 or more, the right bytes above came
	# through at least one fault (retried by ferry, or by curl itself after a reset of a
	# reused connection, so ferry's retries counter is no oracle here).
	nr_gets=$(curl -sf "http://127.0.0.1:$FPORT/_fault/count") || fail "no count from faultserver"
	[ "$nr_gets" -ge 3 ] || fail "mode $mode every 3: only $nr_gets GETs, no fault was hit"
	umount_ferry "$T/mnt-$mode"
	kill "$FAULT_PID"; wait "$FAULT_PID" 2>/dev/null || true
done
pass
