#!/usr/bin/env bash
# Prefetch from the training order: the first epoch on a cold ferry mount, read by the loader
# (shuffled, the trainer's order) from an nginx origin capped at RATE per connection
# (limit_rate), with the loader's prefetch (FERRY_IOC_PREFETCH) and without, in one run. The cap
# is measured in the same run: the origin's rate for 16 parallel range GETs (the daemon's
# transfers). Prints tokens/s, the token bytes/s and the origin's bytes/s against the cap, and
# the data wait per batch, as a markdown table; then again with a simulated training step per
# batch (loader-dump --step-ms) as long as LOAD (0.6) of the cap needs for a batch, where the wait
# says whether the loader is ahead.
#   usage: bench_prefetch.sh [MB of tokens, default 64]   RATE=1m (nginx limit_rate)
# nginx lets a response's first second of bytes through at once (its limit counts from one
# second in), so the cap is measured with requests of the daemon's chunk size (2 MiB), which
# it pays like the daemon's GETs; 16 of them at once, as the daemon's 16 transfers.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${FERRY_BUILD:-$src/build}
mb=${1:-64}
rate=${RATE:-1m}
load=${LOAD:-0.6} # the simulated trainer's demand, a fraction of the cap
B=16
T=1024
dump=$build/loader/loader-dump
ferry=$build/mount/ferry
tmp=$(mktemp -d /tmp/ferry_bench_prefetch.XXXXXX)
daemon_pid=""
cleanup() {
	set +e
	mountpoint -q "$tmp/mnt" 2>/dev/null && fusermount3 -u "$tmp/mnt"
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	bash "$src/tests/lib/nginx.sh" stop "$tmp/nginx" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
for p in "$dump" "$ferry"; do [ -x "$p" ] || { echo "bench_prefetch: $p is not built" >&2; exit 1; }; done
[ -e /dev/fuse ] || { echo "bench_prefetch: no /dev/fuse" >&2; exit 1; }
mkdir -p "$tmp/www/data" "$tmp/mnt"

# uint16 llm.c shards of 8M tokens (16 MiB) each.
/usr/bin/python3 - "$tmp/www/data" "$mb" <<'PY'
import sys, numpy as np
d, mb = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(max(1, mb // 16)):
    t = rng.integers(0, 50257, size=8 << 20).astype('<u2')
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, t.size]
    with open('%s/s_%04d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
bytes=$(cat "$tmp/www/data"/s_*.bin | wc -c)

port=$(bash "$src/tests/lib/nginx.sh" start "$tmp/nginx" "$tmp/www")
master=$(cat "$tmp/nginx/nginx.pid")
old=$(pgrep -P "$master" | sort)
sed -i "s|location / { }|location / { limit_rate $rate; }|" "$tmp/nginx/nginx.conf"
grep -q "limit_rate $rate" "$tmp/nginx/nginx.conf" || { echo "bench_prefetch: nginx.sh's config changed" >&2; exit 1; }
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g "user root;" -s reload 2>/dev/null
for _ in $(seq 100); do
	[ -z "$(comm -12 <(pgrep -P "$master" | sort) <(echo "$old"))" ] && break
	sleep 0.1
done

# The cap: 32 range GETs of a chunk (2 MiB), 16 at a time, as the daemon's transfers make them.
cap=$(/usr/bin/python3 - "http://127.0.0.1:$port/data/" "$(ls "$tmp/www/data" | wc -l)" <<'PY'
import sys, time, threading, urllib.request
url, nr_files, n, size = sys.argv[1], int(sys.argv[2]), 32, 2 << 20
got = [0] * n
def get(i):
    for k in (i, i + 16):
        f, off = "s_%04d.bin" % (k // 8 % nr_files), (k % 8) * size
        req = urllib.request.Request(url + f, headers={"Range": "bytes=%d-%d" % (off, off + size - 1)})
        got[k] = len(urllib.request.urlopen(req).read())
t0 = time.monotonic()
th = [threading.Thread(target=get, args=(i,)) for i in range(16)]
[t.start() for t in th]; [t.join() for t in th]
assert all(got), 'a range GET failed'
print(int(sum(got) / (time.monotonic() - t0)))
PY
)
steps=$("$dump" --data "$tmp/www/data/s_*.bin" --batch $B --seq $T --steps 1 --bench 2>&1 >/dev/null |
	sed -n 's/.*, \([0-9]*\) steps per epoch.*/\1/p')
[ -n "$steps" ] || { echo "bench_prefetch: no steps per epoch" >&2; exit 1; }

# run MODE ENV...: a cold mount, one epoch; prints "out-of-loader-dump origin-bytes"
run() {
	local out fetched
	rm -rf "$tmp/cache"
	"$ferry" mount "http://127.0.0.1:$port/data/" "$tmp/mnt" --cache-dir "$tmp/cache" \
		--cache-size $((2 * mb + 256))M --chunk-size 2M -f 2>"$tmp/daemon.log" &
	daemon_pid=$!
	for _ in $(seq 100); do [ -e "$tmp/mnt/s_0000.bin" ] && break; sleep 0.1; done
	[ -e "$tmp/mnt/s_0000.bin" ] || { cat "$tmp/daemon.log" >&2; exit 1; }
	local envs=() args=()
	for a in "$@"; do case $a in *=*) envs+=("$a") ;; *) args+=("$a") ;; esac; done
	out=$(env "${envs[@]}" "$dump" "${args[@]}" --data "$tmp/mnt/s_*.bin" --batch $B --seq $T --shuffle --seed 1 \
		--steps "$steps" --bench 2>>"$tmp/dump.log")
	fetched=$("$ferry" stat "$tmp/mnt" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_fetched"])')
	fusermount3 -u "$tmp/mnt"
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=""
	echo "$out fetched $fetched"
}
off=$(run FERRY_LOADER_PREFETCH=0)
on=$(run)
# A trainer whose step takes as long as LOAD of the cap needs for a batch's tokens: the loader
# can keep up, and the data wait shows whether it is ahead.
step_ms=$(/usr/bin/python3 -c "print('%.3f' % ($B * $T * 2 / ($load * $cap) * 1e3))")
off_step=$(run FERRY_LOADER_PREFETCH=0 --step-ms "$step_ms")
on_step=$(run --step-ms "$step_ms")

/usr/bin/python3 - "$cap" "$bytes" "$steps" "$rate" "$step_ms" "$off" "$on" "$off_step" "$on_step" <<'PY'
import sys
cap, nbytes, steps, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
step_ms = sys.argv[5]
print("bench_prefetch: first epoch, cold mount, %.0f MB of uint16 shards, B=16 T=1024, "
      "shuffled, %d batches, 2 MiB chunks; origin nginx limit_rate %s a connection, cap (16 parallel range "
      "GETs of a chunk, same run) %.1f MB/s" % (nbytes / 1e6, steps, rate, cap / 1e6))
print()
print("| prefetch | step | seconds | tokens/s | token bytes/s ÷ cap | origin bytes/s ÷ cap | wait ms/batch | after the first quarter | ahead at end |")
print("|---|---|---|---|---|---|---|---|---|")
for name, step, line in (("off", "none", sys.argv[6]), ("on", "none", sys.argv[7]),
                         ("off", step_ms + " ms", sys.argv[8]), ("on", step_ms + " ms", sys.argv[9])):
    f = line.split()
    d = dict(zip(f[0::2], f[1::2]))
    s, tps = float(d["seconds"]), float(d["tokens_per_s"])
    print("| %s | %s | %.1f | %.0f | %.2f | %.2f | %.2f | %.3f | %s |" % (name, step, s, tps,
          tps * 2 / cap, int(d["fetched"]) / s / cap, float(d["wait_ms_per_batch"]),
          float(d["late_wait_ms_per_batch"]),
          d["ahead"] if d["prefetch"] == "on" else "-"))
PY
