#!/usr/bin/env bash
# A uint32 llm.c shard among uint16 ones, in --data and in --val: the run ends with a non-zero
# status and one line that names that shard and says why (the loader's reason), whether the
# loader finds it at start or when the shard is first read. It used to say only
# "training data: Invalid argument".
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
# train_002.bin / val_001.bin: the same tokens as uint32 (magic 20240801, version 7)
/usr/bin/python3 - "$work/data" <<'PY'
import sys, numpy as np
d = sys.argv[1]
for src, dst in (("train_001.bin", "train_002.bin"), ("val_000.bin", "val_001.bin")):
    raw = open(f"{d}/{src}", "rb").read()
    t = np.frombuffer(raw[1024:], dtype=np.uint16).astype(np.uint32)
    h = np.zeros(256, dtype=np.int32)
    h[0], h[1], h[2], h[3] = 20240801, 7, len(t), 256
    open(f"{d}/{dst}", "wb").write(h.tobytes() + t.tobytes())
PY
args=(--layers 1 --heads 1 --dim 16 --seq-len 32 --batch 4 --steps 400 --warmup 1
	--ckpt-every 0 --threads 1)

# run WHAT SHARD ARGS...: the run fails with one line naming SHARD
run() {
	local what=$1 shard=$2 rc=0
	shift 2
	rm -rf "$work/run"
	timeout -k 5 60 "$FERRY" train "$@" "${args[@]}" --out "$work/run" >"$work/out" 2>"$work/err" ||
		rc=$?
	[ "$rc" != 124 ] && [ "$rc" != 137 ] || fail "$what: the run did not end in 60 s"
	[ "$rc" != 0 ] || fail "$what: the run exited 0"
	[ "$(wc -l <"$work/err")" = 1 ] || { cat "$work/err" >&2; fail "$what: not one line"; }
	grep -q "^ferry train: .*$shard: ." "$work/err" ||
		{ cat "$work/err" >&2; fail "$what: the line does not name $shard and why"; }
	echo "ok: $what: $(cat "$work/err") (after $(grep -c '^step' "$work/out") steps)"
}

run "--data" "$work/data/train_002.bin" --data "$work/data/train_*.bin" --eval-every 0
run "--val" "$work/data/val_001.bin" --data "$work/data/train_000.bin" \
	--val "$work/data/val_*.bin" --eval-every 2 --val-batches 400
pass "a uint32 shard among uint16 ones is named"
