#!/usr/bin/python3
"""Lists, checks and damages the objects of ferry's shared chunk tier (issue 11) in an S3 store,
with botocore: an S3 client independent of ferry's own. Used by tests/lib/tier.sh.

The store comes from the environment: S3_ENDPOINT and the AWS_* credentials that
tests/lib/s3server.sh writes (path-style addressing, region us-east-1).

  tier_objects.py list BUCKET PREFIX
      one object under PREFIX a line, tab-separated: key, size, then the ferry-* metadata
      as path (percent-decoded), offset, length, version (percent-decoded), source, xxh3,
      format ("-" where a field is missing)
  tier_objects.py verify BUCKET PREFIX SRCDIR CHUNK_BYTES
      checks every object against the source tree: key layout PREFIX ferry-v1/SOURCE/
      XXH3(path NUL version)/INDEX, one source id, all metadata, the bytes equal to the source's
      at ferry-offset = INDEX x CHUNK_BYTES, ferry-xxh3 the XXH3-64 of the bytes, and one object
      for each chunk of each file of SRCDIR; exit 1 naming what is wrong
  tier_objects.py damage BUCKET KEY MODE [ARG]
      rewrites one object in place; MODE is one of
        bytes              other bytes of the same length, the same metadata
        meta FIELD VALUE   the same bytes, one metadata field (without ferry-) set to VALUE;
                           VALUE "+1" adds one to a number, "other" flips a hex digit or
                           appends "x"
        drop-meta          the same bytes, no metadata at all
        truncate           the first half of the bytes, the same metadata
        append             the bytes and 1000 more, the same metadata
        truncate-consistent  the first half, ferry-length and ferry-xxh3 made to match it
        empty              no bytes, the same metadata
        copy-from KEY2     the object KEY2 copied over it, metadata included (copy_object)
  tier_objects.py get BUCKET KEY FILE / put BUCKET KEY FILE [NAME=VALUE...] / delete-all
  BUCKET PREFIX
"""
import ctypes
import os
import sys
import urllib.parse

import botocore.session
from botocore.config import Config

FIELDS = ("path", "offset", "length", "version", "source", "xxh3", "format")

_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3(b):
    return "%016x" % _xxh.XXH3_64bits(b, len(b))


def client():
    return botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=os.environ["S3_ENDPOINT"],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                      retries={"max_attempts": 5}))


def keys(s3, bucket, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return out


def meta_of(s3, bucket, key):
    m = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    return {k[len("ferry-"):]: v for k, v in m.items() if k.startswith("ferry-")}


def cmd_list(s3, bucket, prefix):
    for key, size in keys(s3, bucket, prefix):
        m = meta_of(s3, bucket, key)
        row = [key, str(size)]
        for f in FIELDS:
            v = m.get(f, "-")
            if f in ("path", "version") and v != "-":
                v = urllib.parse.unquote(v)
            row.append(v)
        print("\t".join(row))


def cmd_verify(s3, bucket, prefix, srcdir, chunk_bytes):
    chunk_bytes = int(chunk_bytes)
    bad = []
    sources = set()
    chunks = {}
    objs = keys(s3, bucket, prefix)
    for key, size in objs:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        m = meta_of(s3, bucket, key)
        missing = [f for f in FIELDS if f not in m]
        if missing:
            bad.append("%s: no ferry-%s" % (key, ", ferry-".join(missing)))
            continue
        path = urllib.parse.unquote(m["path"])
        version = urllib.parse.unquote(m["version"])
        rel = path.lstrip("/")
        parts = key[len(prefix):].split("/")
        if len(parts) != 4 or parts[0] != "ferry-v1":
            bad.append("%s: not PREFIX ferry-v1/SOURCE/HASH/INDEX" % key)
            continue
        _, source, phash, index = parts
        sources.add(source)
        if m["format"] != "1":
            bad.append("%s: ferry-format %r" % (key, m["format"]))
        if m["source"] != source or len(source) != 16:
            bad.append("%s: ferry-source %r, key says %r" % (key, m["source"], source))
        want_hash = xxh3(path.encode() + b"\0" + version.encode())
        if phash != want_hash:
            bad.append("%s: path hash %s, XXH3-64 of (%r, NUL, %r) is %s" %
                       (key, phash, path, version, want_hash))
        try:
            off, length, index = int(m["offset"]), int(m["length"]), int(index)
        except ValueError:
            bad.append("%s: offset %r length %r" % (key, m["offset"], m["length"]))
            continue
        if length != len(body) or length != size:
            bad.append("%s: ferry-length %d, %d bytes" % (key, length, len(body)))
        if m["xxh3"].lower() != xxh3(body):
            bad.append("%s: ferry-xxh3 %s, bytes hash to %s" % (key, m["xxh3"], xxh3(body)))
        try:
            with open(os.path.join(srcdir, rel), "rb") as f:
                f.seek(off)
                want = f.read(length)
                fsize = os.fstat(f.fileno()).st_size
        except OSError as e:
            bad.append("%s: path %r: %s" % (key, path, e))
            continue
        if want != body:
            bad.append("%s: bytes differ from %s at %d" % (key, rel, off))
        if off != index * chunk_bytes or length != min(chunk_bytes, fsize - off) or length <= 0:
            bad.append("%s: index %d, %d bytes at %d of a %d-byte file (chunks of %d)" %
                       (key, index, length, off, fsize, chunk_bytes))
        if (rel, off) in chunks:
            bad.append("%s: a second object for %s at %d" % (key, rel, off))
        chunks[(rel, off)] = key
    if len(sources) > 1:
        bad.append("objects of %d source ids: %s" % (len(sources), sorted(sources)))
    # Every chunk of every file of the source has its object: the tier is complete.
    nr_want = 0
    for d, _, fs in os.walk(srcdir):
        for n in fs:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, srcdir)
            for off in range(0, os.path.getsize(p), chunk_bytes):
                nr_want += 1
                if (rel, off) not in chunks:
                    bad.append("no object for %s at %d" % (rel, off))
    for b in bad[:20]:
        print("BAD", b, file=sys.stderr)
    if bad:
        sys.exit("%d problems in %d tier objects (%d chunks in the source)" %
                 (len(bad), len(objs), nr_want))
    print("%d tier objects verify against the %d chunks of the source" % (len(objs), nr_want))


def other(v):
    if v and all(c in "0123456789abcdef" for c in v.lower()):
        c = v[-1].lower()
        return v[:-1] + ("0" if c != "0" else "1")
    return v + "x"


def cmd_damage(s3, bucket, key, mode, *args):
    o = s3.get_object(Bucket=bucket, Key=key)
    body, meta = o["Body"].read(), dict(o["Metadata"])
    if mode == "bytes":
        body = bytes(b ^ 0x5A for b in body)
    elif mode == "meta":
        field, value = "ferry-" + args[0], args[1]
        if value == "+1":
            value = str(int(meta[field]) + 1)
        elif value == "other":
            value = other(meta[field])
        meta[field] = value
    elif mode == "drop-meta":
        meta = {}
    elif mode == "append":
        body = body + bytes(range(256)) * 3 + bytes(232)
    elif mode == "truncate":
        body = body[:len(body) // 2]
    elif mode == "truncate-consistent":
        body = body[:len(body) // 2]
        meta["ferry-length"] = str(len(body))
        meta["ferry-xxh3"] = xxh3(body)
    elif mode == "empty":
        body = b""
    elif mode == "copy-from":
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": args[0]},
                       MetadataDirective="COPY")
        return
    else:
        sys.exit("unknown damage mode %r" % mode)
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, bucket, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    s3 = client()
    if cmd == "list":
        cmd_list(s3, bucket, *rest)
    elif cmd == "verify":
        cmd_verify(s3, bucket, *rest)
    elif cmd == "damage":
        cmd_damage(s3, bucket, *rest)
    elif cmd == "get":
        with open(rest[1], "wb") as f:
            f.write(s3.get_object(Bucket=bucket, Key=rest[0])["Body"].read())
    elif cmd == "put":
        meta = dict(a.split("=", 1) for a in rest[2:])
        with open(rest[1], "rb") as f:
            s3.put_object(Bucket=bucket, Key=rest[0], Body=f.read(), Metadata=meta)
    elif cmd == "delete-all":
        for key, _ in keys(s3, bucket, rest[0]):
            s3.delete_object(Bucket=bucket, Key=key)
    else:
        sys.exit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
