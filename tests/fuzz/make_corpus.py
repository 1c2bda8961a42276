#!/usr/bin/python3
# Writes the seed corpus of fuzz_shard.c into corpus/shard/ (kept in git; rerun to refresh):
# good and broken llm.c headers, Megatron .idx files and raw token files. Input layout:
# byte 0 picks the parser (0 llm.c, 1 .idx, 2|format<<2 shard_probe), bytes 1..8 the other
# file's size, then the bytes.
import os, struct, sys
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'shard')
os.makedirs(out, exist_ok=True)

def put(name, mode, declared, body):
    with open(os.path.join(out, name), 'wb') as f:
        f.write(bytes([mode]) + struct.pack('<Q', declared) + body)

def llmc(magic, version, count, vocab=0):
    h = [0] * 256
    h[0:4] = [magic, version, count, vocab]
    return struct.pack('<256i', *h)

def idx(dtype, sizes, ptrs=None, docs=None, version=1, magic=b'MMIDIDX\x00\x00'):
    w = 2 if dtype in (3, 8) else 4
    if ptrs is None:
        ptrs, s = [], 0
        for n in sizes:
            ptrs.append(s * w)
            s += n
    docs = docs if docs is not None else list(range(len(sizes) + 1))
    return (magic + struct.pack('<QBQQ', version, dtype, len(sizes), len(docs)) +
            struct.pack('<%di' % len(sizes), *sizes) + struct.pack('<%dq' % len(ptrs), *ptrs) +
            struct.pack('<%dq' % len(docs), *docs))

put('llmc_u16_ok', 0, 1024 + 2 * 1000, llmc(20240520, 1, 1000, 256))
put('llmc_u32_ok', 0, 1024 + 4 * 77, llmc(20240801, 7, 77))
put('llmc_truncated', 0, 600, llmc(20240520, 1, 10)[:600])
put('llmc_bad_magic', 0, 1024 + 20, llmc(12345, 1, 10))
put('llmc_bad_version', 0, 1024 + 20, llmc(20240520, 7, 10))
put('llmc_size_mismatch', 0, 1024 + 19, llmc(20240520, 1, 10))
put('llmc_negative_count', 0, 1024, llmc(20240520, 1, -5))
put('llmc_huge_count', 0, 1024 + 2 * 0x7fffffff, llmc(20240520, 1, 0x7fffffff))
put('idx_u16_ok', 1, 2 * 60, idx(8, [10, 20, 30]))
put('idx_i32_ok', 1, 4 * 7, idx(4, [3, 4]))
put('idx_empty_ok', 1, 0, idx(3, []))
put('idx_bad_ptr', 1, 2 * 60, idx(8, [10, 20, 30], ptrs=[0, 20, 41]))
put('idx_negative_size', 1, 0, idx(8, [5, -5]))
put('idx_bin_mismatch', 1, 2 * 61, idx(8, [10, 20, 30]))
put('idx_bad_dtype', 1, 8, idx(7, [4]))
put('idx_bad_version', 1, 8, idx(8, [4], version=2))
put('idx_bad_magic', 1, 8, idx(8, [4], magic=b'MMIDIDY\x00\x00'))
put('idx_huge_counts', 1, 8, idx(8, [4])[:18] + struct.pack('<QQ', 1 << 62, 1 << 62))
put('idx_truncated', 1, 8, idx(8, [4])[:20])
# A first sequence past the .bin: rejected there, before the later ones are read.
put('idx_first_seq_past_bin', 1, 8, idx(8, [1 << 30, 4]))
put('probe_auto_llmc', 2 | (0 << 2), 0, llmc(20240520, 1, 3) + b'\x01\x00\x02\x00\x03\x00')
put('probe_llmc_short', 2 | (1 << 2), 0, llmc(20240801, 7, 3) + b'\x01\x00')
put('probe_raw_u16', 2 | (2 << 2), 0, bytes(range(10)))
put('probe_raw_u32_odd', 2 | (3 << 2), 0, bytes(range(10)))
put('probe_empty', 2, 0, b'')
