#!/usr/bin/env bash
# ferry's main job, end to end on one machine: installs what it needs, builds, makes a
# byte-level dataset from text a Debian package installed (`ferry data make`), serves it with
# nginx on loopback, mounts it (`ferry mount`), verifies the shards through the mount, trains a
# small GPT on the CPU through the mount (`ferry train`), shows the loss falling, a generated
# sample, the loss curve and `ferry stat`, and unmounts. Safe to run twice; leaves nothing
# running or mounted; the training run stays in FERRY_DEMO_OUT.
#   FERRY_DEMO_DIR   scratch: dataset, nginx state, cache, mountpoint (default /tmp/ferry-demo)
#   FERRY_DEMO_OUT   the training run: log.csv, loss.svg, checkpoints, train.log
#                    (default /var/tmp/ferry-demo-run; replaced by the next demo)
#   DEMO_STEPS       training steps (default 500: about 2-3 minutes on 2 cores; 60 for a
#                    quick check). The same steps give the same losses on every machine.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
PY=/usr/bin/python3
work=${FERRY_DEMO_DIR:-/tmp/ferry-demo}
out=${FERRY_DEMO_OUT:-/var/tmp/ferry-demo-run}
steps=${DEMO_STEPS:-500}
build=${FERRY_BUILD:-$src/build}
export LC_ALL=C.UTF-8
step() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo.sh: $*" >&2
	exit 1
}
[[ "$steps" =~ ^[1-9][0-9]*$ ]] && [ "$steps" -ge 10 ] || die "DEMO_STEPS must be a number >= 10"

# The model: d4, 4 layers, 4 heads, 256 channels (3.3M parameters) on 128-byte windows,
# 8 sequences a step: on 2 cores it learns words and the licenses' phrasing in 2-3 minutes.
model=(--model d4 --seq-len 128 --batch 8 --lr 2e-3 --seed 1)
nr_evals=4
val_batches=8
sample_bytes=240

mkdir -p "$work"

step "dependencies (scripts/deps.sh)"
bash scripts/deps.sh || die "installing dependencies failed"

step "build ($build)"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >"$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; die "meson setup failed"; }
fi
ninja -C "$build" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; die "build failed"; }
ferry=$build/mount/ferry
[ -x "$ferry" ] || die "no ferry binary at $ferry"
echo "built $ferry"

# A previous run that was interrupted may have left its mount or server behind.
mnt=$work/mnt data=$work/data cache=$work/cache state=$work/nginx
if [ -d "$mnt" ] && mountpoint -q "$mnt"; then
	"$ferry" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true
fi
bash tests/lib/nginx.sh stop "$state" 2>/dev/null || true
cleanup() {
	local rc=$?
	set +e
	if mountpoint -q "$mnt" 2>/dev/null; then
		"$ferry" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	bash tests/lib/nginx.sh stop "$state" 2>/dev/null
	[ "$rc" -eq 0 ] || echo "demo.sh: failed (exit $rc); nothing is left mounted or running" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The corpus: the license texts of base-files (on every Debian), about 260 KB of English, GPL-3
# last so that the validation split (the last 10%) is its end; Python's standard library
# sources (python3, from deps.sh) if those are missing; text generated here as a last resort.
step "text corpus"
corpus=()
while IFS= read -r f; do corpus+=("$f"); done < <(
	find /usr/share/common-licenses -maxdepth 1 -type f ! -name GPL-3 2>/dev/null | sort
	[ -f /usr/share/common-licenses/GPL-3 ] && echo /usr/share/common-licenses/GPL-3
)
corpus_bytes() { [ $# -eq 0 ] && echo 0 || cat "$@" | wc -c; }
if [ "$(corpus_bytes "${corpus[@]}")" -lt 100000 ]; then
	corpus=()
	while IFS= read -r f; do corpus+=("$f"); done < <(
		find /usr/lib/python3.[0-9]* -maxdepth 1 -name '*.py' -size +8k 2>/dev/null | sort | head -60
	)
fi
if [ "$(corpus_bytes "${corpus[@]}")" -lt 100000 ]; then
	"$PY" - "$work/generated.txt" <<'PY'
import random, sys
rng = random.Random(1)
subj = ["the cache", "a reader", "the server", "every chunk", "the mount", "a trainer"]
verb = ["fetches", "keeps", "serves", "reads", "verifies", "remembers"]
obj = ["the bytes", "each file", "the shards", "a range", "the listing", "its tokens"]
how = ["on first touch", "from local disk", "over loopback", "without copying", "in order"]
with open(sys.argv[1], "w") as f:
    for _ in range(6000):
        f.write("%s %s %s %s.\n" % tuple(rng.choice(w) for w in (subj, verb, obj, how)))
PY
	corpus=("$work/generated.txt")
fi
echo "${#corpus[@]} files, $(corpus_bytes "${corpus[@]}") bytes: ${corpus[0]%/*}/{$(basename -a "${corpus[@]}" | head -4 | paste -sd,),...}"

step "byte-level dataset: ferry data make --text ... --out $data"
rm -rf "$data"
"$ferry" data make --text "${corpus[@]}" --out "$data" || die "ferry data make failed"
"$ferry" data inspect "$data"/*.bin | cut -c1-140

step "serve it with nginx on loopback"
port=$(bash tests/lib/nginx.sh start "$state" "$data") || die "nginx did not start"
url="http://127.0.0.1:$port/"
echo "$url"

step "mount: ferry mount --cache-dir $cache --cache-size 1G $url $mnt"
rm -rf "$cache" # a cold first read, so the demo shows fetching; the cache persists otherwise
mkdir -p "$mnt"
"$ferry" mount --cache-dir "$cache" --cache-size 1G "$url" "$mnt" || die "ferry mount failed"
ls -l "$mnt"

step "verify the shards through the mount (sha256 against the source)"
"$PY" - "$data" "$mnt" <<'PY' || die "bytes through the mount differ from the source"
import hashlib, os, sys
src, mnt = sys.argv[1:3]
names = sorted(os.listdir(src))
if sorted(os.listdir(mnt)) != names:
    sys.exit("the mount lists %s, the source %s" % (sorted(os.listdir(mnt)), names))
for n in names:
    h = [hashlib.sha256(open(os.path.join(r, n), "rb").read()).hexdigest() for r in (src, mnt)]
    if h[0] != h[1]:
        sys.exit("%s: sha256 %s through the mount, %s at the source" % (n, h[1], h[0]))
    print("%-18s %9d bytes  sha256 %s  = source" % (n, os.path.getsize(os.path.join(mnt, n)), h[1][:16]))
PY

step "numpy.memmap of the train shard through the mount, against the text"
"$PY" - "$mnt/train_000000.bin" "${corpus[@]}" <<'PY' || die "numpy.memmap through the mount differs from the text"
import numpy as np, sys
# llm.c shard: 256 int32 header (magic 20240520, version, token count), then uint16 tokens
hdr = np.memmap(sys.argv[1], dtype=np.int32, mode="r", shape=(256,))
tok = np.memmap(sys.argv[1], dtype=np.uint16, mode="r", offset=1024)
text = b"".join(open(p, "rb").read() for p in sys.argv[2:])
assert hdr[0] == 20240520 and hdr[2] == tok.shape[0], "bad header %s" % hdr[:4]
want = np.frombuffer(text, dtype=np.uint8)[: tok.shape[0]]
idx = np.random.default_rng(7).integers(0, tok.shape[0], 1000)
assert (tok[idx] == want[idx]).all(), "tokens differ from the text's bytes"
i = int(idx[0]) - int(idx[0]) % 64
print("%d tokens; 1000 random tokens equal the text's bytes; tokens %d..%d read as text:\n  %r"
      % (tok.shape[0], i, i + 63, bytes(tok[i:i + 64].astype(np.uint8))))
PY

train() { # extra options...: ferry train on the mount's shards, the demo's model
	"$ferry" train --data "$mnt/train_*.bin" --val "$mnt/val_*.bin" "${model[@]}" \
		--val-batches "$val_batches" --ckpt-every 100000 --keep 1 "$@"
}

eval_every=$(((steps + nr_evals - 1) / nr_evals))
warmup=$((steps / 10 < 25 ? steps / 10 : 25))

step "train on the CPU through the mount: $steps steps, eval and sample every $eval_every"
echo "ferry train --data '$mnt/train_*.bin' --val '$mnt/val_*.bin' ${model[*]}" \
	"--steps $steps --warmup $warmup --eval-every $eval_every --sample $sample_bytes --out $out"
rm -rf "$out" # the previous demo's run: ferry train will not start over a run's checkpoints
mkdir -p "$(dirname "$out")"
t0=$(date +%s)
# Every step's line goes to train.log; the screen gets about 20 of them, evals and samples.
set +e
train --steps "$steps" --warmup "$warmup" --eval-every "$eval_every" --sample "$sample_bytes" \
	--out "$out" 2>&1 | tee "$work/train.log" |
	awk -v every=$(((steps + 19) / 20)) '
		/^step / { split($2, a, "/"); if (a[1] % every == 0 || a[1] == 1 || / val /) print; next }
		/^sample: / { print "  (sample at this step printed at the end)"; insample = 1; next }
		/^(ferry|step) / { insample = 0 }
		!insample { print }'
rc=${PIPESTATUS[0]}
set -e
cp "$work/train.log" "$out/train.log" 2>/dev/null || true
[ "$rc" -eq 0 ] || die "ferry train failed (exit $rc); its output is in $out/train.log"
echo "trained $steps steps in $(($(date +%s) - t0)) s"

step "did it learn? (log.csv)"
"$PY" - "$out/log.csv" <<'PY' || die "the loss did not fall"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
loss = [float(r["loss"]) for r in rows]
val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
k = max(1, min(10, len(loss) // 5))
last = sum(loss[-k:]) / k
uniform = math.log(256)
print("train loss: step 1 %.3f -> last %d steps %.3f (guessing uniformly: %.3f)"
      % (loss[0], k, last, uniform))
print("val loss:   " + ", ".join("step %d %.3f" % v for v in val))
bad = []
if not last < loss[0] - 0.5:
    bad.append("train loss fell by less than 0.5")
if not val or not val[-1][1] < uniform - 0.5:
    bad.append("val loss not below uniform guessing")
if len(val) > 1 and not val[-1][1] < val[0][1]:
    bad.append("val loss did not fall")
if bad:
    sys.exit("; ".join(bad))
print("the loss fell: %.1f%% (train), val %.3f vs %.3f for uniform guessing"
      % (100 * (1 - last / loss[0]), val[-1][1], uniform))
PY

step "a sample from the trained model ($sample_bytes bytes, after a newline)"
"$PY" - "$work/train.log" <<'PY'
import sys
log = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
s = log.rsplit("\nsample: ", 1)[-1] if "\nsample: " in log else ""
for end in ("\nferry train: ", "\nstep "):
    s = s.split(end, 1)[0]
for line in s.split("\n"):
    print("  | " + line)
PY

step "the loss curve"
[ -s "$out/loss.svg" ] || die "no loss curve at $out/loss.svg"
echo "$out/loss.svg (open it in a browser); the run's log is $out/log.csv"

step "ferry stat $mnt"
"$ferry" stat "$mnt" || die "ferry stat failed"

step "unmount"
"$ferry" umount "$mnt" || die "ferry umount failed"
mountpoint -q "$mnt" && die "still mounted"
bash tests/lib/nginx.sh stop "$state"
echo "the cache stays in $cache ($(du -sh "$cache" | cut -f1)): mounting the same URL again is warm"

step "demo OK; the training run is in $out"
ls "$out"
