#!/usr/bin/env bash
# 1,000 random (offset, length) preads, over files of several sizes and past their ends,
# equal the source's bytes. FERRY_SEED picks another sequence; it is printed on failure.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" big.bin:40M mid.bin:9437185 small.bin:70001 tiny.bin:3 zero.bin:0
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M
seed=${FERRY_SEED:-$RANDOM}
"$PY" - "$T/src" "$T/mnt" "$seed" <<'PY' || fail "seed $seed (rerun with FERRY_SEED=$seed)"
import os, random, sys
src, mnt, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
names = ["big.bin"] * 6 + ["mid.bin"] * 3 + ["small.bin", "tiny.bin", "zero.bin"]
fds = {n: (os.open(os.path.join(src, n), os.O_RDONLY), os.open(os.path.join(mnt, n), os.O_RDONLY))
       for n in set(names)}
for i in range(1000):
    n = rng.choice(names)
    size = os.fstat(fds[n][0]).st_size
    kind = rng.random()
    if kind < 0.1:
        off = max(0, size - rng.randrange(1, 10000))           # around the end
    elif kind < 0.15:
        off = size + rng.randrange(0, 1 << 20)                  # past the end
    elif kind < 0.3:
        off = max(0, (rng.randrange(size + 1) >> 20 << 20) - rng.randrange(3))  # chunk edge
    else:
        off = rng.randrange(size + 1)
    length = rng.choice([1, 2, 511, 4096, 4097, 65536, 131072, 1 << 20, (1 << 20) + 1,
                         rng.randrange(1, 4 << 20)])
    a = os.pread(fds[n][0], length, off)
    if rng.random() < 0.2:   # a fresh open now and then, not only the long-lived fd
        fd = os.open(os.path.join(mnt, n), os.O_RDONLY)
        b = os.pread(fd, length, off)
        os.close(fd)
    else:
        b = os.pread(fds[n][1], length, off)
    if a != b:
        first = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        sys.exit("pread %d: %s off %d len %d: got %d bytes, want %d, first difference at +%d" %
                 (i, n, off, length, len(b), len(a), first))
print("1000 preads equal (seed %d)" % seed)
PY
umount_ferry "$T/mnt"
pass
