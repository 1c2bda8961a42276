# shellcheck shell=bash
# make_shards DIR: byte-level llm.c shards (magic 20240520, version 1, uint16 tokens,
# header[3] = 256) of this repository's trainer sources, written with numpy, an oracle
# independent of `ferry data make`: DIR/train_000.bin, train_001.bin, val_000.bin. Sourced by
# tests/integ/train_lib.sh and by the GPU and bench scripts, which keep their own harness.
make_shards() {
	local out=$1 src
	src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	mkdir -p "$out"
	cat "$src"/train/*.c "$src"/train/*.h >"$out/corpus.txt"
	/usr/bin/python3 - "$out" <<'PY'
import sys, numpy as np
out = sys.argv[1]
toks = np.frombuffer(open(out + "/corpus.txt", "rb").read(), dtype=np.uint8).astype(np.uint16)
def write(path, t):
    h = np.zeros(256, dtype=np.int32)
    h[0], h[1], h[2], h[3] = 20240520, 1, len(t), 256
    with open(path, "wb") as f:
        f.write(h.tobytes()); f.write(t.tobytes())
cut = int(len(toks) * 0.9)
write(out + "/train_000.bin", toks[:cut // 2])
write(out + "/train_001.bin", toks[cut // 2:cut])
write(out + "/val_000.bin", toks[cut:])
PY
}
