#!/usr/bin/env bash
# `ferry train` reading its shards through a ferry HTTP mount gives the same run as on the
# source files: the same losses, lr, grad norms and validation losses bit for bit in log.csv and
# the same final weights byte for byte. The shards come from `ferry data make` on generated text
# (checked token for token against the text by python) and nginx serves them on loopback.
. "$(dirname "$0")/lib.sh"
need_fuse

log "generated text, ferry data make"
mkdir -p "$T/text" "$T/src/ds"
"$PY" - "$T/text" <<'PY'
import random, sys
rng = random.Random(4)
words = ("ferry mount cache chunk loader token shard train loss model layer batch step "
         "the a of to and in is it that on").split()
for k in range(2):
    lines = []
    for i in range(1500):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + ".")
    open(f"{sys.argv[1]}/part{k}.txt", "w").write("\n".join(lines) + "\n")
PY
# small shards so that the loader crosses file boundaries through the mount
timeout 60 "$FERRY" data make --text "$T/text/part0.txt" "$T/text/part1.txt" --out "$T/src/ds" \
	--shard-tokens 40000 >"$T/make.out" || fail "ferry data make failed"
"$PY" - "$T/text" "$T/src/ds" <<'PY' || fail "the shards do not hold the text's bytes"
import glob, sys, numpy as np
text = b"".join(open(f"{sys.argv[1]}/part{k}.txt", "rb").read() for k in range(2))
def tokens(pattern):
    out = []
    for p in sorted(glob.glob(f"{sys.argv[2]}/{pattern}")):
        h = np.fromfile(p, dtype=np.int32, count=256)
        assert h[0] == 20240520 and h[1] == 1, f"{p}: header {h[:4]}"
        t = np.fromfile(p, dtype=np.uint16, offset=1024)
        assert len(t) == h[2], f"{p}: {len(t)} tokens, header says {h[2]}"
        out.append(t)
    return np.concatenate(out)
tr, va = tokens("train_*.bin"), tokens("val_*.bin")
assert len(glob.glob(f"{sys.argv[2]}/train_*.bin")) >= 3, "want several train shards"
want = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
assert np.array_equal(np.concatenate([tr, va]), want), "tokens differ from the text's bytes"
print(f"{len(tr)} train + {len(va)} val tokens equal the text's bytes")
PY

log "serve with nginx, mount"
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/ds/" "$T/mnt"
same_tree "$T/src/ds" "$T/mnt" || fail "the mount does not show the shards"

args=(--layers 2 --heads 2 --dim 32 --seq-len 64 --batch 4 --total-batch-tokens 512
	--steps 12 --lr 3e-3 --warmup 3 --seed 5 --eval-every 4 --val-batches 3 --ckpt-every 6
	--threads 2)
log "train on the source files"
timeout 300 "$FERRY" train --data "$T/src/ds/train_*.bin" --val "$T/src/ds/val_*.bin" \
	"${args[@]}" --out "$T/run_src" >"$T/src.out" || fail "training on the source failed"
log "train through the mount"
timeout 300 "$FERRY" train --data "$T/mnt/train_*.bin" --val "$T/mnt/val_*.bin" \
	"${args[@]}" --out "$T/run_mnt" >"$T/mnt.out" || fail "training through the mount failed"

# the shards really came over HTTP
nginx_requests | grep -q '^GET /ds/train_' || fail "nginx served no train shard"
nginx_requests | grep -q '^GET /ds/val_' || fail "nginx served no val shard"

# step, loss, lr, grad_norm, val_loss (ms, tokens/s and data wait are timings)
cols() { cut -d, -f1-4,8 "$1"; }
[ "$(cols "$T/run_src/log.csv" | wc -l)" = 13 ] ||
	fail "source run: log.csv has $(wc -l <"$T/run_src/log.csv") lines, want 13"
[ "$(awk -F, 'NR > 1 && $8 != ""' "$T/run_src/log.csv" | wc -l)" -ge 3 ] ||
	fail "source run logged fewer than 3 validation losses"
diff <(cols "$T/run_src/log.csv") <(cols "$T/run_mnt/log.csv") >&2 ||
	fail "losses through the mount differ from the source run"
cmp "$T/run_src/model_00000012.bin" "$T/run_mnt/model_00000012.bin" ||
	fail "final weights differ"
# the model learnt something: the last loss is below the first
"$PY" - "$T/run_src/log.csv" <<'PY' || fail "loss did not fall"
import csv, sys
r = list(csv.DictReader(open(sys.argv[1])))
a, b = float(r[0]["loss"]), float(r[-1]["loss"])
print(f"loss {a:.4f} -> {b:.4f}")
sys.exit(0 if b < a else 1)
PY
pass "12 steps through the mount equal the source run bit for bit"
