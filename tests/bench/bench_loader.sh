#!/usr/bin/env bash
# Loader throughput (CPU path) against `dd` of the same shards, all in one run: tokens/s, the
# ratio to dd (target >= 0.8 from a warm mount) and the data-wait per batch, for
#   - shards in the page cache (plain files),
#   - a warm ferry mount of the same shards served by a private nginx: the fast path (direct
#     reads of the daemon's cache file) and FERRY_LOADER_DIRECT=0 (reads through FUSE),
# each in sequential and shuffled order. dd reads the source files and the files through the
# mount. Prints a markdown table.
#   usage: bench_loader.sh [MB of tokens, default 256]
#   FERRY_LOADER_DUMP_BASE=path/to/older/loader-dump adds that build's rows, same run.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${FERRY_BUILD:-$src/build}
mb=${1:-256}
dump=$build/loader/loader-dump
base=${FERRY_LOADER_DUMP_BASE:-}
ferry=$build/mount/ferry
reps=${BENCH_REPS:-3}
tmp=$(mktemp -d /tmp/ferry_bench_loader.XXXXXX)
daemon_pid=""
cleanup() {
	set +e
	mountpoint -q "$tmp/mnt" 2>/dev/null && fusermount3 -u "$tmp/mnt"
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	bash "$src/tests/lib/nginx.sh" stop "$tmp/nginx" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/www/data" "$tmp/mnt"

# uint16 llm.c shards of 16M tokens (32 MB) each.
/usr/bin/python3 - "$tmp/www/data" "$mb" <<'PY'
import sys, numpy as np
d, mb = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(max(1, mb // 32)):
    t = rng.integers(0, 50257, size=16 << 20).astype('<u2')
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, t.size]
    with open('%s/s_%04d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
srcdir=$tmp/www/data
nr_files=$(ls "$srcdir"/s_*.bin | wc -l)
bytes=$(cat "$srcdir"/s_*.bin | wc -c) # and into the page cache
tokens=$(( (bytes - 1024 * nr_files) / 2 ))

mount_ok=0
if [ -x "$ferry" ] && [ -e /dev/fuse ] && command -v fusermount3 >/dev/null &&
	command -v nginx >/dev/null; then
	port=$(bash "$src/tests/lib/nginx.sh" start "$tmp/nginx" "$tmp/www")
	"$ferry" mount "http://127.0.0.1:$port/data/" "$tmp/mnt" --cache-dir "$tmp/cache" \
		--cache-size $(( 2 * mb + 256 ))M -f 2>"$tmp/daemon.log" &
	daemon_pid=$!
	for _ in $(seq 100); do
		[ -e "$tmp/mnt/s_0000.bin" ] && { mount_ok=1; break; }
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ "$mount_ok" = 1 ]; then
		"$ferry" warm "$tmp/mnt" >/dev/null 2>&1 || { echo "ferry warm failed" >&2; exit 1; }
		cmp -s "$srcdir/s_0000.bin" "$tmp/mnt/s_0000.bin" || { echo "mount differs" >&2; exit 1; }
	else
		echo "bench_loader: the ferry mount did not come up; page-cache rows only" >&2
		cat "$tmp/daemon.log" >&2
	fi
else
	echo "bench_loader: no ferry binary, FUSE or nginx; page-cache rows only" >&2
fi

rate() { /usr/bin/python3 -c "print(int($1 / ($3 - $2)))"; }
best_dd() { # dir: best tokens/s of dd over the shards there
	local best=0 r t0 t1
	for _ in $(seq "$reps"); do
		t0=$(date +%s.%N)
		for f in "$1"/s_*.bin; do dd if="$f" of=/dev/null bs=4M status=none; done
		t1=$(date +%s.%N)
		r=$(rate "$tokens" "$t0" "$t1")
		[ "$r" -gt "$best" ] && best=$r
	done
	echo "$best"
}
B=64 T=1024
steps=$(( tokens / (B * T) - 1 ))
best_loader() { # dump dir shuffle(0|1) env...: "tokens/s wait-ms" of the best run
	local d=$1 dir=$2 shuf=$3 best=0 wait=0 out r flag=""
	shift 3
	[ "$shuf" = 1 ] && flag=--shuffle
	for _ in $(seq "$reps"); do
		out=$(env "$@" "$d" --data "$dir/s_*.bin" --batch $B --seq $T --steps $steps \
			--buffers 4 $flag --bench 2>>"$tmp/dump.log")
		r=$(echo "$out" | awk '{printf "%.0f", $6}')
		if [ "$r" -gt "$best" ]; then best=$r; wait=$(echo "$out" | awk '{print $8}'); fi
	done
	echo "$best $wait"
}

rows=$tmp/rows
: >"$rows"
dd_src=$(best_dd "$srcdir")
echo "dd|source files (page cache)|$dd_src|-|$dd_src" >>"$rows"
dd_mnt=0
if [ "$mount_ok" = 1 ]; then
	dd_mnt=$(best_dd "$tmp/mnt")
	echo "dd|warm ferry mount (FUSE)|$dd_mnt|-|$dd_mnt" >>"$rows"
fi
builds=("new:$dump")
[ -n "$base" ] && builds+=("base:$base")
for b in "${builds[@]}"; do
	name=${b%%:*} d=${b#*:}
	for shuf in 0 1; do
		order=$([ "$shuf" = 1 ] && echo shuffled || echo sequential)
		read -r r w < <(best_loader "$d" "$srcdir" $shuf FERRY_LOADER_DIRECT=0)
		echo "loader $name $order|source files (page cache)|$r|$w|$dd_src" >>"$rows"
		[ "$mount_ok" = 1 ] || continue
		read -r r w < <(best_loader "$d" "$tmp/mnt" $shuf FERRY_LOADER_DIRECT=1)
		echo "loader $name $order|warm mount, fast path (cache file, O_DIRECT)|$r|$w|$dd_mnt" >>"$rows"
		read -r r w < <(best_loader "$d" "$tmp/mnt" $shuf FERRY_LOADER_DIRECT=0)
		echo "loader $name $order|warm mount, through FUSE|$r|$w|$dd_mnt" >>"$rows"
	done
done

/usr/bin/python3 - "$rows" "$mb" "$reps" "$dd_mnt" <<'PY'
import sys
rows, mb, reps, dd_mnt = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print('bench_loader: %s MB of uint16 llm.c shards, B=64 T=1024, default readers, best of %s; '
      'ratio = tokens/s over dd of the same files by the same route (target >= 0.8 from a warm '
      'mount)' % (mb, reps))
print()
print('| what | data | Mtokens/s | ratio to dd | ratio to dd of the mount | wait ms/batch |')
print('|---|---|---:|---:|---:|---:|')
for line in open(rows):
    what, where, r, w, dd = line.strip().split('|')
    r, dd = int(r), int(dd)
    vs_mnt = '%.2f' % (r / dd_mnt) if dd_mnt and what != 'dd' else '-'
    print('| %s | %s | %.1f | %s | %s | %s |' % (what, where, r / 1e6,
          '%.2f' % (r / dd) if what != 'dd' else '-', vs_mnt, w))
PY
