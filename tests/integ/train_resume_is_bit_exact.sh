#!/usr/bin/env bash
# 20 steps straight equal 10 steps, a checkpoint, `--resume` and 10 more: the same losses, lr,
# grad norms and validation losses bit for bit in one log.csv, and the same final weights and
# optimizer state byte for byte; a second run with the same seed gives the same losses.
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --val "$work/data/val_*.bin" --layers 2 --heads 2
	--dim 32 --seq-len 32 --batch 4 --total-batch-tokens 256 --steps 20 --lr 3e-3
	--warmup 4 --seed 7 --eval-every 5 --ckpt-every 5 --keep 2 --sample 16)

"$FERRY" train "${args[@]}" --out "$work/a" --threads 2 >"$work/a.out"
"$FERRY" train "${args[@]}" --out "$work/c" --threads 1 >"$work/c.out"
"$FERRY" train "${args[@]}" --out "$work/b" --stop-at 10 >"$work/b1.out"
[ -f "$work/b/state_00000010.bin" ] || fail "no checkpoint at step 10"
[ ! -f "$work/b/state_00000015.bin" ] || fail "--stop-at 10 went on"
"$FERRY" train --resume "$work/b" --threads 2 >"$work/b2.out"

# columns: step, loss, lr, grad_norm, val_loss (ms, tokens/s and data wait are timings)
cols() { cut -d, -f1-4,8 "$1"; }
[ "$(cols "$work/a/log.csv" | wc -l)" = 21 ] || fail "straight run: log.csv has $(wc -l <"$work/a/log.csv") lines"
[ "$(grep -c '^step,' "$work/b/log.csv")" = 1 ] || fail "resumed log.csv has more than one header"
diff <(cols "$work/a/log.csv") <(cols "$work/b/log.csv") >&2 || fail "resumed losses differ"
diff <(cols "$work/a/log.csv") <(cols "$work/c/log.csv") >&2 || fail "same seed, different losses"
cmp "$work/a/model_00000020.bin" "$work/b/model_00000020.bin" || fail "final weights differ"
cmp "$work/a/state_00000020.bin" "$work/b/state_00000020.bin" || fail "final optimizer state differs"
grep -q '^sample: ' "$work/b2.out" || fail "no sample printed at evaluations"
grep -q '<polyline' "$work/b/loss.svg" || fail "no loss curve in loss.svg"
# keep 2: only the last two checkpoints stay
[ "$(ls "$work/b"/state_*.bin | wc -l)" = 2 ] || fail "--keep 2 kept $(ls "$work/b"/state_*.bin | wc -l)"
# --steps may be raised on resume, not lowered, and other settings are refused
"$FERRY" train --resume "$work/b" --steps 5 2>"$work/err" && fail "--steps lowered on resume accepted"
[ "$(wc -l <"$work/err")" = 1 ] || fail "error is not one line: $(cat "$work/err")"
"$FERRY" train --resume "$work/b" --lr 1 2>/dev/null && fail "--lr accepted on resume"
"$FERRY" train --resume "$work/b" --steps 22 >/dev/null || fail "raising --steps failed"
[ "$(tail -1 "$work/b/log.csv" | cut -d, -f1)" = 22 ] || fail "raised --steps did not reach 22"

# The loader's order settings (blocks of 4 KiB, windows of 3 blocks: another order than the
# defaults on this data) are saved in the checkpoint: a run started with them in the
# environment resumes in an environment without them, bit for bit; one that says otherwise
# is refused with one line; the options do the same as the environment.
"$FERRY" train "${args[@]}" --out "$work/o" --loader-block-bytes 4096 \
	--loader-window-blocks 3 >/dev/null
diff -q <(cols "$work/a/log.csv") <(cols "$work/o/log.csv") >/dev/null &&
	fail "blocks of 4 KiB x 3 gave the default order's losses: the leg below proves nothing"
FERRY_LOADER_BLOCK_BYTES=4096 FERRY_LOADER_WINDOW_BLOCKS=3 \
	"$FERRY" train "${args[@]}" --out "$work/e" --stop-at 10 >/dev/null
diff <(cols "$work/o/log.csv" | head -11) <(cols "$work/e/log.csv") >&2 ||
	fail "the environment and the options gave different orders"
FERRY_LOADER_BLOCK_BYTES=8192 "$FERRY" train --resume "$work/e" 2>"$work/err" &&
	fail "a resume with another FERRY_LOADER_BLOCK_BYTES than the checkpoint's was accepted"
[ "$(wc -l <"$work/err")" = 1 ] || fail "error is not one line: $(cat "$work/err")"
grep -q FERRY_LOADER_BLOCK_BYTES "$work/err" || fail "the refusal does not name the variable: $(cat "$work/err")"
"$FERRY" train --resume "$work/e" --loader-window-blocks 3 2>/dev/null &&
	fail "--loader-window-blocks accepted on resume"
"$FERRY" train --resume "$work/e" >/dev/null
diff <(cols "$work/o/log.csv") <(cols "$work/e/log.csv") >&2 ||
	fail "resumed without the environment, the order settings were lost"
cmp "$work/o/state_00000020.bin" "$work/e/state_00000020.bin" || fail "final optimizer state differs (order settings)"
pass "resume is bit-exact"
