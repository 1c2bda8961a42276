#!/usr/bin/env bash
# A 1 GiB object on radosgw (multipart upload, generated in a stream from a seeded PRNG, so
# neither side holds it twice), read through the mount at 200 random offsets with random
# lengths, including reads across chunk boundaries and at the very end; every byte equals the
# generator's. Chunks of 256 KiB keep what is fetched small.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
size_mb=${S3_LARGE_MB:-1024}
# The OSD keeps objects in memory: room for the object, its multipart parts being assembled,
# and radosgw's own pools.
export S3SERVER_MEMSTORE_BYTES=$(((size_mb * 2 + 512) << 20))
serve_s3

# The generator: block b (64 KiB) is random.Random(SEED * 2^32 + b).randbytes(64 KiB), so any
# range can be recomputed without the rest.
gen=$T/gen.py
cat >"$gen" <<'PY'
import random
SEED, BLOCK = 20240520, 1 << 16
def block(b):
    return random.Random(SEED * (1 << 32) + b).randbytes(BLOCK)
def span(off, n):
    out = bytearray()
    b = off // BLOCK
    while len(out) < (off % BLOCK) + n:
        out += block(b)
        b += 1
    return bytes(out[off % BLOCK:off % BLOCK + n])
PY

log "uploading a ${size_mb} MiB object in 64 MiB parts, generated as it goes"
s3_py '
import importlib.util
from concurrent.futures import ThreadPoolExecutor
spec = importlib.util.spec_from_file_location("gen", sys.argv[1]); gen = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)
size = int(sys.argv[2]) << 20
part = 64 << 20
up = s3.create_multipart_upload(Bucket=bucket, Key="big/one.bin")["UploadId"]
def put(i):
    off = i * part
    body = gen.span(off, min(part, size - off))
    r = s3.upload_part(Bucket=bucket, Key="big/one.bin", UploadId=up, PartNumber=i + 1, Body=body)
    return {"PartNumber": i + 1, "ETag": r["ETag"]}
with ThreadPoolExecutor(2) as ex:
    parts = list(ex.map(put, range((size + part - 1) // part)))
s3.complete_multipart_upload(Bucket=bucket, Key="big/one.bin", UploadId=up,
                             MultipartUpload={"Parts": parts})
h = s3.head_object(Bucket=bucket, Key="big/one.bin")
assert h["ContentLength"] == size, h["ContentLength"]
print("uploaded", h["ContentLength"], h["ETag"])
' "$gen" "$size_mb"

M=$T/mnt
mount_ferry "s3://$S3_BUCKET/big/" "$M" --endpoint "$S3_ENDPOINT" --addressing path \
	--chunk-size 256K
[ "$(stat -c %s "$M/one.bin")" = $((size_mb << 20)) ] || fail "size through the mount differs"

log "200 random reads"
"$PY" - "$gen" "$M/one.bin" "$size_mb" <<'PY'
import importlib.util, os, random, sys
spec = importlib.util.spec_from_file_location("gen", sys.argv[1]); gen = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)
path, size = sys.argv[2], int(sys.argv[3]) << 20
chunk = 256 << 10
rng = random.Random(7)
cases = [(0, 1), (size - 1, 1), (size - 300000, 300000), (chunk - 10, 20), (size // 2, 1 << 20)]
while len(cases) < 200:
    if rng.random() < 0.3:  # across a chunk boundary
        c = rng.randrange(1, size // chunk)
        off = c * chunk - rng.randint(1, 4096)
    else:
        off = rng.randrange(size)
    cases.append((off, min(rng.choice([1, 100, 4096, 65536, 200000, 1 << 20]), size - off)))
fd = os.open(path, os.O_RDONLY)
bad = 0
for off, n in cases:
    got = os.pread(fd, n, off)
    if got != gen.span(off, n):
        bad += 1
        print("differs at %d+%d (got %d bytes)" % (off, n, len(got)), file=sys.stderr)
# Past the end: nothing.
if os.pread(fd, 10, size) != b"":
    bad += 1
    print("a read past the end returned bytes", file=sys.stderr)
os.close(fd)
if bad:
    sys.exit("%d of %d reads differ" % (bad, len(cases)))
print("%d reads equal the generator" % len(cases))
PY
fetched=$(stat_json "$M" bytes_fetched)
log "fetched $fetched bytes for 200 reads"
[ "$fetched" -lt $(((size_mb << 20) / 2)) ] || fail "fetched $fetched bytes: random reads fetch the whole object"
[ "$(stat_json "$M" fetch_errors)" = 0 ] || fail "fetch errors counted"
umount_ferry "$M"
pass
