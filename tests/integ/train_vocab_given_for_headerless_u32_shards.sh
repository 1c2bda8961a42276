#!/usr/bin/env bash
# llm.c uint32 shards whose header declares no vocabulary (header[3] = 0, as Llama-3 style
# shards are written) with tokens up to 127,500: `--vocab 128256` trains on them (it used to be
# refused: "the data declares 50257"); without --vocab, or with one too small, the run ends with
# one line naming the shard, the token and its index in that file. A shard that declares its
# vocabulary keeps it: another --vocab is refused.
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/bytes"
# token = byte * 500: the same text, spread over a Llama-3 sized vocabulary
/usr/bin/python3 - "$work/bytes" "$work/data" <<'PY'
import sys, os, numpy as np
src, dst = sys.argv[1:3]
os.makedirs(dst)
for name in ("train_000.bin", "train_001.bin"):
    raw = open(f"{src}/{name}", "rb").read()
    t = np.frombuffer(raw[1024:], dtype=np.uint16).astype(np.uint32) * 500
    h = np.zeros(256, dtype=np.int32)
    h[0], h[1], h[2] = 20240801, 7, len(t)
    open(f"{dst}/{name}", "wb").write(h.tobytes() + t.tobytes())
PY
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2
	--steps 3 --warmup 1 --eval-every 0 --ckpt-every 0 --threads 1)

timeout -k 5 120 "$FERRY" train "${args[@]}" --vocab 128256 --out "$work/run" >"$work/out" \
	2>"$work/err" || { cat "$work/out" "$work/err" >&2; fail "--vocab 128256 did not train"; }
grep -q "V=128256 " "$work/out" || fail "the model does not have 128256 tokens"
[ "$(grep -c '^step' "$work/out")" = 3 ] || fail "--vocab 128256: not 3 steps"
echo "ok: --vocab 128256 trains: $(grep -m1 '^ferry train: new' "$work/out")"

# too small: one line naming the shard and the token, whose index in that file holds it
for v in "" 1000; do
	rc=0
	timeout -k 5 60 "$FERRY" train "${args[@]}" ${v:+--vocab $v} --out "$work/small$v" \
		>"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 137 ] || fail "--vocab '$v': exit $rc"
	[ "$(wc -l <"$work/err")" = 1 ] || { cat "$work/err" >&2; fail "--vocab '$v': not one line"; }
	line=$(cat "$work/err")
	echo "ok: --vocab '$v': $line"
	/usr/bin/python3 - "$line" "${v:-50257}" <<'PY' || fail "--vocab '$v': the line is wrong"
import re, sys, numpy as np
line, vocab = sys.argv[1], int(sys.argv[2])
m = re.match(r"ferry train: training data: (\S+): token (\d+) \(token (\d+) of the file\) "
             r"is not below the vocabulary size (\d+)", line)
assert m, "no file, token and index"
path, token, index, size = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
t = np.fromfile(path, dtype=np.uint32, offset=1024)
assert size == vocab and token >= vocab, (size, token)
assert t[index] == token, f"token {index} of {path} is {t[index]}, not {token}"
PY
done

# a declared vocabulary (header[3] = 256) is the data's: --vocab cannot change it
rc=0
"$FERRY" train "${args[@]/$work\/data/$work/bytes}" --vocab 128256 --out "$work/declared" \
	>"$work/out" 2>"$work/err" || rc=$?
[ "$rc" != 0 ] && grep -q "the data declares 256" "$work/err" ||
	{ cat "$work/err" >&2; fail "--vocab over a declared vocabulary was not refused"; }
pass "--vocab for shards without a declared vocabulary"
