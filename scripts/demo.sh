#!/usr/bin/env bash
# ferry's main job, end to end on one machine: installs what it needs, builds, generates a
# sample dataset, serves it with nginx on loopback, mounts it, reads and verifies every file
# through the mount (sha256 against the source), shows `ferry stat`, reads it again warm,
# and unmounts. Safe to run twice; leaves nothing running or mounted.
#   FERRY_DEMO_DIR   where the dataset, cache and mountpoint live (default /tmp/ferry-demo)
#   FERRY_DEMO_MB    size of the dataset's large file in MiB (default 256)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
PY=/usr/bin/python3
work=${FERRY_DEMO_DIR:-/tmp/ferry-demo}
big_mb=${FERRY_DEMO_MB:-256}
build=${FERRY_BUILD:-$src/build}
step() { printf '\n== %s\n' "$*"; }
die() {
	echo "demo.sh: $*" >&2
	exit 1
}

mkdir -p "$work"

step "dependencies (scripts/deps.sh)"
bash scripts/deps.sh || die "installing dependencies failed"

step "build ($build)"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >"$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; die "meson setup failed"; }
fi
ninja -C "$build" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; die "build failed"; }
ferry=$build/mount/ferry
[ -x "$ferry" ] || die "no ferry binary at $ferry"
echo "built $ferry"

# A previous run that was interrupted may have left its mount or server behind.
mnt=$work/mnt data=$work/data cache=$work/cache state=$work/nginx
if [ -d "$mnt" ] && mountpoint -q "$mnt"; then
	"$ferry" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true
fi
bash tests/lib/nginx.sh stop "$state" 2>/dev/null || true
cleanup() {
	set +e
	if mountpoint -q "$mnt" 2>/dev/null; then
		"$ferry" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	bash tests/lib/nginx.sh stop "$state" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "sample dataset in $data"
mkdir -p "$work" "$mnt"
if [ ! -f "$work/data.complete" ] || [ "$(cat "$work/data.complete")" != "$big_mb" ]; then
	rm -rf "$data"
	"$PY" - "$data" "$big_mb" <<'PY'
import os, random, sys
root, big_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(2024)
def put(rel, n):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        while n:
            k = min(n, 1 << 20)
            f.write(rng.randbytes(k))
            n -= k
# token shards as a trainer would read them, a few hundred small files, one odd name
for i in range(4):
    put("train/shard_%02d.bin" % i, big_mb * (1 << 20) // 4)
put("val/shard_00.bin", 8 << 20)
for i in range(300):
    put("images/%03d/img_%05d.jpg" % (i // 100, i), rng.randrange(1000, 60000))
put("docs/read me.txt", 1234)
put("docs/empty", 0)
PY
	echo "$big_mb" >"$work/data.complete"
fi
"$ferry" manifest "$data" >/dev/null 2>&1 || true
nr_files=$(find "$data" -type f ! -name .complete ! -name .ferry-manifest | wc -l)
echo "$nr_files files, $(du -sh --apparent-size "$data" | cut -f1)"

step "serve it with nginx on loopback"
port=$(bash tests/lib/nginx.sh start "$state" "$data") || die "nginx did not start"
url="http://127.0.0.1:$port/"
echo "$url"

step "mount: $ferry mount $url $mnt --cache-dir $cache --cache-size 2G"
rm -rf "$cache" # a cold first read, so the demo shows fetching; the cache persists otherwise
"$ferry" mount --cache-dir "$cache" --cache-size 2G "$url" "$mnt" || die "ferry mount failed"
ls -l "$mnt" "$mnt/train"

verify() { # label
	local t0 t1
	t0=$(date +%s.%N)
	"$PY" - "$data" "$mnt" <<'PY' || die "$1: bytes through the mount differ from the source"
import hashlib, os, sys
src, mnt = sys.argv[1:3]
nr = nbytes = 0
for d, _, files in os.walk(src):
    for f in sorted(files):
        if f in (".complete", ".ferry-manifest"):
            continue
        rel = os.path.relpath(os.path.join(d, f), src)
        h = []
        for root in (src, mnt):
            s = hashlib.sha256()
            with open(os.path.join(root, rel), "rb") as fh:
                while b := fh.read(1 << 20):
                    s.update(b)
            h.append(s.hexdigest())
        if h[0] != h[1]:
            sys.exit("%s: sha256 %s through the mount, %s at the source" % (rel, h[1], h[0]))
        nr += 1
        nbytes += os.path.getsize(os.path.join(src, rel))
print("%d files, %d MiB: every sha256 equals the source's" % (nr, nbytes >> 20))
PY
	t1=$(date +%s.%N)
	echo "$1 took $("$PY" -c "print(round($t1 - $t0, 2))") s"
}

step "read and verify every file through the mount (cold: fetched from nginx)"
verify "cold read"
step "again (warm: served from the chunk cache and page cache)"
verify "warm read"
step "numpy.memmap of a shard through the mount"
"$PY" - "$data/train/shard_00.bin" "$mnt/train/shard_00.bin" <<'PY' || die "numpy.memmap through the mount differs from the source"
import numpy as np, sys
src, got = (np.memmap(p, dtype=np.uint16, mode="r") for p in sys.argv[1:3])
idx = np.random.default_rng(7).integers(0, src.shape[0], 1000)
assert src.shape == got.shape and (src[idx] == got[idx]).all()
print("%d tokens; 1000 random tokens equal the source's, e.g. [%d] = %d"
      % (got.shape[0], idx[0], got[idx[0]]))
PY

step "ferry stat $mnt"
"$ferry" stat "$mnt" || die "ferry stat failed"

step "unmount"
"$ferry" umount "$mnt" || die "ferry umount failed"
mountpoint -q "$mnt" && die "still mounted"
bash tests/lib/nginx.sh stop "$state"
echo "the cache stays in $cache ($(du -sh "$cache" | cut -f1)): mounting the same URL again is warm"
step "demo OK"
