#!/usr/bin/env bash
# A ZeRO-2 checkpoint on 2 MPI ranks is sharded (train/ckpt.c): one shard file a rank beside a
# manifest and the whole llm.c model file, and a DONE marker that rank 0 writes only once every
# rank's shard is on disk. --resume DIR takes the newest complete checkpoint: one without its
# DONE, with a damaged or missing shard or a damaged manifest is skipped (one line) for the one
# before, and the run then continues bit for bit as the uninterrupted one. --keep prunes shards,
# manifests and markers with their model files. A sharded checkpoint resumes at stage 0 (whole
# moments, each rank reading every shard), writing the whole state file from then on.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 1 --dim 17 --seq-len 33 --batch 4
	--total-batch-tokens 264 --steps 20 --warmup 3 --lr 3e-3 --seed 11 --eval-every 0
	--ckpt-every 5 --keep 2 --threads 1)
cols() { cut -d, -f1-4 "$1"; }

"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/a" >"$work/a.out" ||
	fail "the uninterrupted 2-rank run failed: $(tail -3 "$work/a.out")"
"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/run" --stop-at 15 \
	>"$work/run.out" || fail "the 2-rank run to step 15 failed: $(tail -3 "$work/run.out")"

# the layout: steps 10 and 15 kept (--keep 2), each whole; nothing of step 5 left
names=$(cd "$work/run" && ls | grep -v -e '^log.csv$' -e '^loss.svg$' | tr '\n' ' ')
want="DONE_00000010 DONE_00000015 manifest_00000010.txt manifest_00000015.txt model_00000010.bin \
model_00000015.bin shard_00000010_00000.bin shard_00000010_00001.bin shard_00000015_00000.bin \
shard_00000015_00001.bin "
[ "$names" = "$want" ] || fail "checkpoint files: $names; want $want"
grep -qx 'world_size 2' "$work/run/manifest_00000015.txt" &&
	grep -qx 'zero_stage 2' "$work/run/manifest_00000015.txt" &&
	[ "$(grep -c '^shard ' "$work/run/manifest_00000015.txt")" = 2 ] ||
	fail "manifest: $(head -12 "$work/run/manifest_00000015.txt")"
echo "ok: one shard a rank, a manifest, a DONE; --keep 2 left steps 10 and 15 only"

# resumes from step 10 when step 15 is incomplete or damaged
resume_from_10() { # what reason-pattern
	local rc=0
	rm -f "$work/bad/.ferry-train.lock"
	"${mpirun[@]}" -np 2 "$FERRY" train --resume "$work/bad" --zero-stage 2 \
		>"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" = 0 ] || fail "$1: resume failed ($rc): $(tail -3 "$work/err")"
	[ "$(grep -c . "$work/err")" = 1 ] || fail "$1: not one line on stderr: $(cat "$work/err")"
	grep -q "skipping the checkpoint of step 15: .*$2" "$work/err" ||
		fail "$1: the skipped checkpoint and its reason are not named: $(cat "$work/err")"
	grep -q 'continuing .* from step 10 ' "$work/out" || fail "$1: did not resume from step 10"
	diff <(cols "$work/a/log.csv") <(cols "$work/bad/log.csv") >&2 ||
		fail "$1: losses differ from the uninterrupted run"
	cmp "$work/a/model_00000020.bin" "$work/bad/model_00000020.bin" ||
		fail "$1: final weights differ"
	for r in 0 1; do
		cmp "$work/a/shard_00000020_0000$r.bin" "$work/bad/shard_00000020_0000$r.bin" ||
			fail "$1: final shard $r differs"
	done
	[ -f "$work/bad/DONE_00000020" ] || fail "$1: the final checkpoint has no DONE"
	echo "ok: $1: $(cat "$work/err")"
}
reset() { rm -rf "$work/bad"; cp -r "$work/run" "$work/bad"; }

reset
rm "$work/bad/DONE_00000015"
resume_from_10 "no DONE marker" "DONE_00000015 missing"
reset
"$PY" -c "
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
b[len(b) // 2] ^= 1
open(sys.argv[1], 'wb').write(b)" "$work/bad/shard_00000015_00001.bin"
resume_from_10 "a flipped bit in a shard" "shard_00000015_00001.bin: XXH3 mismatch"
reset
rm "$work/bad/shard_00000015_00000.bin"
resume_from_10 "a missing shard" "shard_00000015_00000.bin: No such file"
reset
sed -i 's/^rng \([0-9]*\)/rng 1\1/' "$work/bad/manifest_00000015.txt"
resume_from_10 "an edited manifest" "manifest_00000015.txt: checksum mismatch"

# at stage 0 (no --zero-stage) on 2 ranks: the same curve, and a whole state file after
"${mpirun[@]}" -np 2 "$FERRY" train --resume "$work/run" >"$work/z0.out" 2>"$work/z0.err" ||
	fail "resuming at stage 0 failed: $(tail -3 "$work/z0.err")"
[ -f "$work/run/state_00000020.bin" ] && [ ! -e "$work/run/manifest_00000020.txt" ] ||
	fail "stage 0 after a sharded checkpoint: no whole state file at step 20"
"$PY" - "$work" <<'PY' || fail "resumed at stage 0, the run went elsewhere (see above)"
import csv, os, sys, numpy as np
sys.path.insert(0, os.environ["FERRY_SRC"] + "/tests/integ")
import train_ckpt
work = sys.argv[1]
def losses(run):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(f"{work}/{run}/log.csv"))}
a, b = losses("a"), losses("run")
w = np.fromfile(f"{work}/a/model_00000020.bin", dtype=np.float32)[256:]
wb = np.fromfile(f"{work}/run/model_00000020.bin", dtype=np.float32)[256:]
rel = train_ckpt.worst(abs(a[s] - b[s]) / abs(a[s]) for s in range(16, 21))
dm = float(np.abs(train_ckpt.moments(f"{work}/a", 20, w.size) -
                  train_ckpt.moments(f"{work}/run", 20, w.size)).max())
print(f"resumed at stage 0: steps 16-20 loss max relative difference {rel:.3g}, "
      f"weights {float(np.abs(w - wb).max()):.3g}, moments {dm:.3g}")
sys.exit(0 if sorted(b) == list(range(1, 21)) and rel <= 1e-4 and
         float(np.abs(w - wb).max()) < 1e-4 and dm < 1e-4 else 1)
PY
pass "a sharded checkpoint counts only with its DONE and every shard intact, and resumes at stage 0"
