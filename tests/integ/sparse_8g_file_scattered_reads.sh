#!/usr/bin/env bash
# An 8 GiB file, sparse on the server too, with marks written at scattered offsets: reads at
# those offsets (and across chunk and 4 GiB boundaries) equal the source, the size is 8 GiB,
# and only the chunks touched are fetched and kept, not the file.
. "$(dirname "$0")/lib.sh"
need_fuse
mkdir -p "$T/src"
truncate -s 8G "$T/src/sparse.bin"
"$PY" - "$T/src/sparse.bin" <<'PY'
import os, random, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
rng = random.Random(8)
for off in [0, 1 << 20, (1 << 32) - 3000, 1 << 32, (8 << 30) - 5000] + \
        [rng.randrange(8 << 30) for _ in range(40)]:
    os.pwrite(fd, rng.randbytes(min(5000, (8 << 30) - off)), off)
PY
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 1M

[ "$(stat -c %s "$T/mnt/sparse.bin")" = $((8 << 30)) ] || fail "size is not 8 GiB"
"$PY" - "$T/src/sparse.bin" "$T/mnt/sparse.bin" <<'PY'
import os, random, sys
src, mnt = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = 8 << 30
rng = random.Random(88)
offs = [0, (1 << 20) - 10, (1 << 32) - 3000, (1 << 32) - 1, size - 5000, size - 1, size, size + 100]
offs += [rng.randrange(size) for _ in range(60)]
for off in offs:
    n = rng.choice([1, 4096, 5000, 70000, 1 << 20])
    a, b = os.pread(src, n, off), os.pread(mnt, n, off)
    if a != b:
        sys.exit("read of %d at %d: %d bytes differ (got %d bytes)" %
                 (n, off, sum(x != y for x, y in zip(a, b)), len(b)))
print("%d scattered reads equal" % len(offs))
PY
used=$(disk_used_bytes "$T/cache")
[ "$used" -lt $((1 << 30)) ] || fail "cache holds $used bytes after scattered reads of an 8 GiB file"
umount_ferry "$T/mnt"
pass "cache holds $((used >> 20)) MiB"
