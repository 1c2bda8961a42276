# Shared by tests/integ/train_*.sh (sourced): finds the ferry binary and makes byte-level
# llm.c shards (magic 20240520, version 1, uint16 tokens, header[3] = 256) with numpy, an
# oracle independent of `ferry data make`.
FERRY_BUILD=${FERRY_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
FERRY=${FERRY_BIN:-$FERRY_BUILD/mount/ferry}
if [ ! -x "$FERRY" ]; then
	echo "SKIP: no ferry binary at $FERRY"
	exit 77
fi

make_shards() { # dir: train_000.bin, train_001.bin, val_000.bin from this repository's C sources
	local out=$1 src=${FERRY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
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

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
