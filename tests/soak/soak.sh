#!/usr/bin/env bash
# Soak: a long run of random sample reads through a ferry mount of a faulty server, under
# cache pressure, with the daemon killed (-9) and remounted every few minutes. Every read is
# compared with the source's bytes; the run fails on a single wrong byte.
#
#   tests/soak/soak.sh DURATION_MINUTES
#
# Builds nothing: uses FERRY_BUILD (default build/) as the integration tests do. Makes a
# source tree of SOAK_DATA_MB (default 300) MiB of random files with a SHA-256 manifest,
# serves it through tests/lib/faultserver.py --mode mix --rate SOAK_RATE (default 0.2: a fifth
# of file GETs answered with 5xx/429/resets/short bodies/wrong statuses/wrong ranges),
# mounts it with --cache-size SOAK_CACHE_SIZE (default 64M) and --chunk-size
# SOAK_CHUNK_SIZE (default 1M), and reads random ranges of random files from SOAK_THREADS
# (default 4) threads. Every SOAK_KILL_EVERY_S seconds (default 180) the daemon's peak RSS
# (VmHWM) is sampled, it is killed with -9 while reads are in flight, and the same cache is
# remounted. At the end it prints reads, bytes, faults injected, mismatches, EIO, remounts and
# the daemon's peak RSS; it exits 1 on any mismatch, a remount that fails, or a read stuck
# for SOAK_STUCK_S (default 180) seconds. SOAK_MIX (e.g. 500,reset,truncate) narrows the
# faults to that list (default: the fault server's mix). FAULTSERVER overrides its path;
# FERRY_KEEP_TMP=1 keeps the temp dir. Needs root (drop_caches is not needed; FUSE is).
# Not run by meson: the lead runs it (30 minutes) after changes to fs/.
if [ $# -ne 1 ] || ! [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
	echo "usage: $0 DURATION_MINUTES" >&2
	exit 2
fi
DURATION_S=$(awk -v m="$1" 'BEGIN { printf "%d", m * 60 }')
. "$(dirname "$0")/../integ/lib.sh"
need_fuse
FAULTSERVER=${FAULTSERVER:-$FERRY_SRC/tests/lib/faultserver.py}
[ -f "$FAULTSERVER" ] || fail "no fault server at $FAULTSERVER"
DATA_MB=${SOAK_DATA_MB:-300}
RATE=${SOAK_RATE:-0.2}
CACHE_SIZE=${SOAK_CACHE_SIZE:-64M}
CHUNK_SIZE=${SOAK_CHUNK_SIZE:-1M}
THREADS=${SOAK_THREADS:-4}
KILL_EVERY_S=${SOAK_KILL_EVERY_S:-180}
STUCK_S=${SOAK_STUCK_S:-180}

log "making $DATA_MB MiB of source files"
"$PY" - "$T/src" "$DATA_MB" <<'PY' || fail "cannot make the source tree"
import hashlib, os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(20261202)
sizes, left = [], total
# Mostly a few MiB, some tiny, some large; every size off the chunk grid.
while left > 0:
    s = rng.choice((rng.randint(0, 70000), rng.randint(1 << 20, 6 << 20),
                    rng.randint(1 << 20, 6 << 20), rng.randint(8 << 20, 24 << 20)))
    s = min(s, left) if left > 4096 else left
    sizes.append(s)
    left -= s
with open(os.path.join(os.path.dirname(root), "manifest.sha256"), "w") as m:
    for i, s in enumerate(sizes):
        rel = "d%02d/f%04d.bin" % (i % 7, i)
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        b = rng.randbytes(s)
        open(p, "wb").write(b)
        m.write("%s  %s\n" % (hashlib.sha256(b).hexdigest(), rel))
print("%d files" % len(sizes))
PY

mix=()
[ -n "${SOAK_MIX:-}" ] && mix=(--mix "$SOAK_MIX")
start_faultserver "$T/src" --mode mix --rate "$RATE" --seed 7 "${mix[@]}"
fault_pid=$FAULT_PID
url="http://127.0.0.1:$FPORT/"
fault_count() { # what: count or faults
	curl -sf --max-time 10 "http://127.0.0.1:$FPORT/_fault/$1" || echo "?"
}

# The readers: THREADS threads read random ranges of random files through the mount and
# compare them with the source's bytes, until the file STOP exists; the totals go to OUT as
# JSON. After STOP an error (the daemon was killed) ends a thread, and a read cut short may
# return a prefix; before it, EIO is counted and any other error is one too.
cat >"$T/reader.py" <<'PY'
import errno, json, os, random, sys, threading, time
src, mnt, seed, nthreads, stop, out, stuck_s = sys.argv[1:8]
seed, nthreads, stuck_s = int(seed), int(nthreads), float(stuck_s)
files = []
for d, _, fs in os.walk(src):
    for n in fs:
        p = os.path.join(d, n)
        files.append((os.path.relpath(p, src), os.path.getsize(p)))
files.sort()
lock = threading.Lock()
tot = {"reads": 0, "bytes": 0, "mismatches": 0, "eio": 0, "errors": 0, "cut_by_kill": 0}
last_done = [time.time()]
mism = []

def stopped():
    return os.path.exists(stop)

def one(rng):
    rel, size = rng.choice(files)
    kind = rng.random()
    if kind < 0.1 or size == 0:
        off, ln = 0, size + 1                      # whole file
    elif kind < 0.2:
        off, ln = max(0, size - rng.randint(1, 70000)), 1 << 20   # the tail
    else:
        off = rng.randrange(size)
        ln = rng.choice((1, 100, 4096, 65536, 300000, 1 << 20, 4 << 20))
    with open(os.path.join(src, rel), "rb") as f:
        f.seek(off)
        want = f.read(ln)
    try:
        fd = os.open(os.path.join(mnt, rel), os.O_RDONLY)
        try:
            got = b""
            # A read larger than the kernel's max read comes back in parts: loop to the end.
            while len(got) < ln:
                b = os.pread(fd, ln - len(got), off + len(got))
                if not b:
                    break
                got += b
            # Most reads leave nothing in the kernel's page cache of the mount (keep_cache
            # would answer the next read of the file without asking the daemon).
            if rng.random() < 0.9:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError as e:
        if stopped():
            return "end"
        with lock:
            if e.errno == errno.EIO:
                tot["eio"] += 1
            else:
                tot["errors"] += 1
                mism.append("%s: %d bytes at %d: %s" % (rel, ln, off, e))
        return "err"
    short_ok = stopped() and got == want[:len(got)]
    with lock:
        if got != want and not short_ok:
            tot["mismatches"] += 1
            i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                     min(len(got), len(want)))
            mism.append("%s: %d bytes at %d: WRONG BYTES: %d returned, want %d, first "
                        "difference at byte %d" % (rel, ln, off, len(got), len(want), off + i))
        elif got != want:
            tot["cut_by_kill"] += 1
            return "end"
        else:
            tot["reads"] += 1
            tot["bytes"] += len(got)
        last_done[0] = time.time()
    return "ok"

def run(k):
    rng = random.Random(seed * 1000 + k)
    try:
        while not stopped():
            if one(rng) == "end":
                return
    except Exception as e:  # a bug of this script: counted, so that the soak fails
        with lock:
            tot["errors"] += 1
            mism.append("reader thread %d: %r" % (k, e))

def save(stuck=False):
    with lock:
        d = dict(tot, stuck=stuck, details=mism[:50])
    tmp = out + ".part"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, out)

ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(nthreads)]
for t in ts:
    t.start()
while any(t.is_alive() for t in ts):
    time.sleep(0.5)
    save()
    if not stopped() and time.time() - last_done[0] > stuck_s:
        save(stuck=True)
        os._exit(3)
save()
PY

start=$(date +%s)
end=$((start + DURATION_S))
remounts=0 peak_kb=0 epoch=0
: >"$T/epochs"
sample_hwm() { # pid: peak RSS so far, into peak_kb
	local kb
	kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
	[ "${kb:-0}" -gt "$peak_kb" ] && peak_kb=$kb
	return 0
}
run_epoch() { # seconds: mount (again), read for that long, then end: kill or clean
	local secs=$1 how=$2 pid reader rc=0
	epoch=$((epoch + 1))
	rm -f "$T/stop"
	mount_ferry "$url" "$T/mnt" --chunk-size "$CHUNK_SIZE" --cache-size "$CACHE_SIZE"
	pid=$(ferry_daemon_pid "$T/mnt")
	"$PY" "$T/reader.py" "$T/src" "$T/mnt" "$epoch" "$THREADS" "$T/stop" "$T/epoch.$epoch.json" \
		"$STUCK_S" &
	reader=$!
	# Sleep in steps, so that a reader that found a stuck read ends the epoch early.
	local t_end=$(($(date +%s) + secs))
	while [ "$(date +%s)" -lt "$t_end" ] && kill -0 "$reader" 2>/dev/null; do
		sleep 1
	done
	sample_hwm "$pid"
	touch "$T/stop"
	if [ "$how" = kill ]; then
		kill -9 "$pid" 2>/dev/null || fail "epoch $epoch: the daemon $pid was already gone"
		timeout 60 tail --pid="$reader" -f /dev/null || fail "epoch $epoch: readers stuck after the kill"
		wait "$reader" || rc=$?
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		fusermount3 -uz "$T/mnt" 2>/dev/null || umount -l "$T/mnt" ||
			fail "epoch $epoch: cannot unmount the killed mount"
		remounts=$((remounts + 1))
	else
		timeout 120 tail --pid="$reader" -f /dev/null || fail "epoch $epoch: readers stuck at the end"
		wait "$reader" || rc=$?
		sample_hwm "$pid"
		umount_ferry "$T/mnt"
	fi
	echo "$T/epoch.$epoch.json" >>"$T/epochs"
	[ "$rc" -eq 3 ] && { STUCK=1; return 0; }
	[ "$rc" -eq 0 ] || fail "epoch $epoch: the readers exited $rc"
	log "epoch $epoch ($how): $(tr -d '\n' <"$T/epoch.$epoch.json" | cut -c1-160)"
}

STUCK=0
while :; do
	now=$(date +%s)
	left=$((end - now))
	if [ "$left" -le "$KILL_EVERY_S" ]; then
		run_epoch "$((left > 5 ? left : 5))" clean
		break
	fi
	# Kill at a random point of the interval, so that kills land on all phases.
	run_epoch "$((KILL_EVERY_S / 2 + RANDOM % (KILL_EVERY_S / 2 + 1)))" kill
	[ "$STUCK" = 1 ] && break
done

log "whole files through a clean remount against the SHA-256 manifest"
nr_whole_bad=0
if [ "$STUCK" = 0 ]; then
	mount_ferry "$url" "$T/mnt" --chunk-size "$CHUNK_SIZE" --cache-size "$CACHE_SIZE"
	# 20 files, the same ones every run; EIO is counted, not wrong.
	head -20 "$T/manifest.sha256" | sed "s|  |  $T/mnt/|" >"$T/manifest.mnt"
	timeout 600 sha256sum -c --quiet "$T/manifest.mnt" >"$T/whole.out" 2>&1 || true
	nr_whole_bad=$(grep -c 'FAILED$' "$T/whole.out" || true)
	grep 'FAILED$' "$T/whole.out" | sed 's/^/  /' >&2 || true
	pid=$(ferry_daemon_pid "$T/mnt")
	sample_hwm "$pid"
	umount_ferry "$T/mnt"
fi
( cd "$T/src" && sha256sum -c --quiet ../manifest.sha256 ) || fail "the source tree changed"

rc=0
"$PY" - "$T/epochs" "$nr_whole_bad" "$remounts" "$peak_kb" "$(fault_count count)" \
	"$(fault_count faults)" "$(($(date +%s) - start))" "$STUCK" >"$T/report" <<'PY' || rc=$?
import json, sys
epochs, whole_bad, remounts, peak_kb, gets, faults, secs, stuck = sys.argv[1:9]
tot = {"reads": 0, "bytes": 0, "mismatches": 0, "eio": 0, "errors": 0, "cut_by_kill": 0}
details = []
for p in open(epochs).read().split():
    d = json.load(open(p))
    for k in tot:
        tot[k] += d[k]
    details += d["details"]
print("soak: %s s, %d reads, %.1f MiB read, %s file GETs, %s faults injected" %
      (secs, tot["reads"], tot["bytes"] / (1 << 20), gets, faults))
print("soak: mismatches %d (reads) + %s (whole files), EIO %d, other errors %d, reads cut by "
      "a kill %d, remounts after kill -9 %s, daemon peak RSS %.1f MiB%s" %
      (tot["mismatches"], whole_bad, tot["eio"], tot["errors"], tot["cut_by_kill"], remounts,
       int(peak_kb) / 1024, ", A READ WAS STUCK" if stuck == "1" else ""))
for d in details[:20]:
    print("  " + d)
bad = tot["mismatches"] + int(whole_bad) + tot["errors"] + (stuck == "1")
sys.exit(1 if bad else 0)
PY

cat "$T/report"
[ "$rc" -eq 0 ] || fail "wrong bytes, errors other than EIO, or a stuck read: see above"
pass
