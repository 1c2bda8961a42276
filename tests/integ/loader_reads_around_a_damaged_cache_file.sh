#!/usr/bin/env bash
# The loader's fast path on a ferry mount reads the daemon's cache files directly (O_DIRECT),
# not through FUSE: it must check what it reads against the block checksums the daemon gives
# with FERRY_IOC_RESIDENT. Here the cache files are damaged under a live mount (a byte flipped
# in every MiB, then 64 KiB holes punched, the map still saying "present"), and the loader's
# batches, shuffled and in file order, still equal the batches read from the source files;
# the loader counts the reads it redid through the mount. On a clean cache it redoes none and
# says how many blocks it checked, so the fast path really ran.
. "$(dirname "$0")/lib.sh"
need_fuse
dump=$FERRY_BUILD/loader/loader-dump
data_tool=$FERRY_BUILD/loader/ferry-data
[ -x "$dump" ] && [ -x "$data_tool" ] || fail "loader-dump or ferry-data not built"

mkdir -p "$T/www"
"$PY" -c "
import random; random.seed(9)
w = ['alpha', 'beta', 'gamma', 'delta', 'ferry', '\n']
open('$T/text.txt', 'w').write(' '.join(random.choice(w) for _ in range(1200000)))"
# ~7 MB of text -> 6 train shards of 600k tokens (1.2 MB each).
"$data_tool" make --text "$T/text.txt" --out "$T/www/data" --shard-tokens 600000 >/dev/null
serve_nginx "$T/www"
mount_ferry "http://127.0.0.1:$PORT/data/" "$T/mnt" --chunk-size 1M

# Shuffled: windows of 8 blocks of 256 KiB, read in place, many pieces. File order: batches
# of 64 x 1024 tokens (128 KiB reads, through the bounce buffer).
run() { # name dir env...
	local name=$1 dir=$2
	shift 2
	env "$@" "$dump" --data "$dir/train_*.bin" --batch 8 --seq 256 --seed 3 --shuffle \
		--block-bytes 262144 --steps 120 --verbose --out "$T/$name.shuf" 2>"$T/$name.log" ||
		{ cat "$T/$name.log" >&2; fail "$name: loader-dump (shuffled) failed"; }
	env "$@" "$dump" --data "$dir/train_*.bin" --batch 64 --seq 1024 --steps 40 --verbose \
		--out "$T/$name.seq" 2>>"$T/$name.log" ||
		{ cat "$T/$name.log" >&2; fail "$name: loader-dump (file order) failed"; }
}
same_as_source() { # name
	cmp -s "$T/source.shuf" "$T/$1.shuf" || { cat "$T/$1.log" >&2; fail "$1: shuffled batches differ from the source's"; }
	cmp -s "$T/source.seq" "$T/$1.seq" || { cat "$T/$1.log" >&2; fail "$1: file-order batches differ from the source's"; }
}
# "fast path: N reads ... ; M blocks matched their checksums, K reads were redone ...":
# the sums of M and of K over the log's lines.
counts() { # log
	awk '/fast path: .* blocks matched/ {
		for (i = 1; i <= NF; i++) { if ($i == "blocks") m += $(i - 1); if ($i == "reads" && $(i + 1) == "were") k += $(i - 1) }
	} END { print m + 0, k + 0 }' "$1"
}

run source "$T/www/data" FERRY_LOADER_IO=pread
timeout 120 "$FERRY" warm "$T/mnt" >/dev/null 2>&1 || fail "ferry warm failed"

log "a clean cache: the fast path checks every block and redoes nothing"
run clean "$T/mnt" FERRY_LOADER_DIRECT=1
grep -q "read path ferry-direct" "$T/clean.log" || { cat "$T/clean.log" >&2; fail "the fast path was not chosen"; }
same_as_source clean
read -r matched redone < <(counts "$T/clean.log")
[ "$matched" -gt 0 ] || { cat "$T/clean.log" >&2; fail "the fast path checked no block"; }
[ "$redone" = 0 ] || { cat "$T/clean.log" >&2; fail "$redone reads redone on a clean cache"; }
echo "ok: $matched blocks checked, none redone"

shopt -s globstar nullglob
datas=("$T"/cache/**/*.data)
[ "${#datas[@]}" -gt 0 ] || fail "no .data file under the cache directory"

damage() { # how: flip | punch
	"$PY" - "$1" "${datas[@]}" <<'PY'
import os, sys
how, files = sys.argv[1], sys.argv[2:]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
n = 0
for path in files:
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    if how == 'flip':
        for off in range(5000, size, 1 << 20):
            b = os.pread(fd, 1, off)
            os.pwrite(fd, bytes([b[0] ^ 0x5a]), off)
            n += 1
    else:
        # 64 KiB holes at odd multiples of 192 KiB: other blocks than the flips hit
        for off in range(192 << 10, size - (64 << 10), 384 << 10):
            if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, 64 << 10) != 0:
                sys.exit('fallocate: errno %d' % ctypes.get_errno())
            n += 1
    os.fsync(fd)
    os.close(fd)
print('%s: %d places in %d cache files' % (how, n, len(files)))
PY
}

log "a byte flipped every 1 MiB of every cache file, under the live mount"
damage flip
run flipped "$T/mnt" FERRY_LOADER_DIRECT=1
same_as_source flipped
read -r matched redone < <(counts "$T/flipped.log")
[ "$redone" -gt 0 ] || { cat "$T/flipped.log" >&2; fail "no read redone through the mount: the damage went unseen"; }
echo "ok: batches equal the source's; $redone reads redone through the mount, $matched blocks matched"

log "64 KiB holes punched under present chunks"
damage punch
run punched "$T/mnt" FERRY_LOADER_DIRECT=1
same_as_source punched
read -r matched redone < <(counts "$T/punched.log")
[ "$redone" -gt 0 ] || { cat "$T/punched.log" >&2; fail "no read redone through the mount: the holes went unseen"; }
echo "ok: batches equal the source's; $redone reads redone through the mount, $matched blocks matched"
umount_ferry "$T/mnt"
pass "the loader never takes an unchecked byte from the cache file"
