#!/usr/bin/env bash
# --resume of a sharded (ZeRO) checkpoint: each rank reads and checks only the shards whose
# moments it will load (train/ckpt.c, ckpt_find_resumable_ranks), not all of them, and the ranks
# agree on the checkpoint in one collective per candidate. Counted from the ranks' own openat
# calls (strace, one trace a rank) of a 2-rank ZeRO-2 run stopped after step 15:
# - resumed on 2 ranks at stage 2 each rank opens one shard of step 15, its own (not 2);
# - on 3 ranks at stage 2 the old shards its new slice overlaps (rank 1 both, the others one);
# - with shard 1 of step 15 damaged, which only rank 1 reads on 2 ranks, rank 0 never opens it,
#   yet every rank falls back to step 10 together: one line says why, the run ends in time and
#   continues bit for bit as the uninterrupted run.
source "$(dirname "$0")/train_lib.sh"
need_mpi
need_cmd strace
work=$T
mpirun=(timeout 120 mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 1 --dim 17 --seq-len 33 --batch 4
	--total-batch-tokens 792 --steps 20 --warmup 3 --lr 3e-3 --seed 11 --eval-every 0
	--ckpt-every 5 --keep 2 --threads 1)
cols() { cut -d, -f1-4 "$1"; }

# each rank under strace, its opens in $work/strace.RANK (Open MPI names the rank); in a
# sanitizer build without the leak check, which cannot run under ptrace (LeakSanitizer ends
# the process with a fatal error); the untraced runs keep it
cat >"$work/traced" <<EOF
#!/bin/sh
export ASAN_OPTIONS="\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}detect_leaks=0"
exec strace -f -qq -e trace=openat,open -o "$work/strace.\$OMPI_COMM_WORLD_RANK" "\$@"
EOF
chmod +x "$work/traced"

# opened RANK STEP: the shard files of STEP that RANK opened (each name once, sorted); a write's
# temporary file (.bin.tmp) is not one
opened() {
	grep -o "/shard_$(printf %08d "$2")_[0-9]*\.bin\"" "$work/strace.$1" | tr -d '"/' |
		sort -u
}
# nr_opens RANK STEP: how many times it opened them
nr_opens() { grep -c "/shard_$(printf %08d "$2")_[0-9]*\.bin\"" "$work/strace.$1"; }
# wanted DIR STEP R RANK: the shards of that checkpoint that overlap rank RANK's slice of R at
# ZeRO stage 1 or 2 (zero.c: ceil(nr_params / R) parameters a rank), from its manifest
wanted() {
	awk -v R="$3" -v k="$4" -v s="$(printf %08d "$2")" '
		$1 == "nr_params" { n = $2 }
		$1 == "shard" { lo[$2] = $3; hi[$2] = $4; W = $2 + 1 }
		END {
			per = int((n + R - 1) / R); a = k * per; b = a + per; if (b > n) b = n
			for (r = 0; r < W; r++)
				if (lo[r] < b && a < hi[r]) printf "shard_%s_%05d.bin\n", s, r
		}' "$1/manifest_$(printf %08d "$2").txt"
}

"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/a" >"$work/a.out" ||
	fail "the uninterrupted 2-rank run failed: $(tail -3 "$work/a.out")"
"${mpirun[@]}" -np 2 "$FERRY" train "${args[@]}" --zero-stage 2 --out "$work/run" --stop-at 15 \
	>"$work/run.out" || fail "the 2-rank run to step 15 failed: $(tail -3 "$work/run.out")"
[ -f "$work/run/DONE_00000015" ] || fail "no complete checkpoint at step 15"

# resume DIR RANKS WHAT: resumes DIR on RANKS ranks at stage 2, each traced
resume() {
	local rc=0
	rm -f "$work"/strace.* "$1/.ferry-train.lock"
	"${mpirun[@]}" -np "$2" "$work/traced" "$FERRY" train --resume "$1" --zero-stage 2 \
		>"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" = 0 ] || fail "$3: resume failed ($rc; 124: it hung): $(tail -3 "$work/err")"
	for ((r = 0; r < $2; r++)); do
		[ -s "$work/strace.$r" ] || fail "$3: no trace of rank $r"
	done
}
# reads_own DIR STEP RANKS WHAT: each rank opened exactly the shards of STEP its slice needs (DIR:
# the untouched checkpoints, whose manifests a resumed run may have pruned since)
reads_own() {
	local r got want
	for ((r = 0; r < $3; r++)); do
		got=$(opened $r "$2" | tr '\n' ' ')
		want=$(wanted "$1" "$2" "$3" $r | tr '\n' ' ')
		if [ -z "$want" ] || [ "$got" != "$want" ]; then
			fail "$4: rank $r opened shards $got; its slice needs $want"
		fi
		echo "$4: rank $r opened ${got% } ($(nr_opens $r "$2") opens: check and load)"
	done
}

# the same world size: one shard a rank, bit for bit
cp -a "$work/run" "$work/same"
resume "$work/same" 2 "2 ranks"
reads_own "$work/run" 15 2 "2 ranks"
for r in 0 1; do
	[ "$(opened $r 15 | wc -l)" = 1 ] || fail "2 ranks: rank $r opened $(opened $r 15 | wc -l) shards"
done
diff <(cols "$work/a/log.csv") <(cols "$work/same/log.csv") >&2 ||
	fail "2 ranks: losses differ from the uninterrupted run"
cmp "$work/a/model_00000020.bin" "$work/same/model_00000020.bin" || fail "2 ranks: weights differ"
echo "ok: resumed on 2 ranks, each opened one shard of step 15, its own"

# another world size: the overlapping old shards only
cp -a "$work/run" "$work/three"
resume "$work/three" 3 "3 ranks"
reads_own "$work/run" 15 3 "3 ranks"
echo "ok: resumed on 3 ranks, each opened the old shards its slice overlaps"

# a damaged shard only rank 1 reads: every rank falls back to step 10 together
cp -a "$work/run" "$work/bad"
"$PY" -c "
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
b[len(b) // 2] ^= 1
open(sys.argv[1], 'wb').write(b)" "$work/bad/shard_00000015_00001.bin"
resume "$work/bad" 2 "shard 1 damaged"
[ "$(opened 0 15)" = "shard_00000015_00000.bin" ] ||
	fail "shard 1 damaged: rank 0 opened $(opened 0 15 | tr '\n' ' ')of step 15; only its own"
[ "$(opened 1 15)" = "shard_00000015_00001.bin" ] ||
	fail "shard 1 damaged: rank 1 opened $(opened 1 15 | tr '\n' ' ')of step 15; only its own"
reads_own "$work/run" 10 2 "shard 1 damaged, step 10"
if [ "$(grep -c . "$work/err")" != 1 ] ||
	! grep -q "skipping the checkpoint of step 15: .*shard_00000015_00001.bin: XXH3 mismatch" \
		"$work/err"; then
	fail "shard 1 damaged: not the one line naming it: $(cat "$work/err")"
fi
grep -q 'continuing .* from step 10 ' "$work/out" || fail "shard 1 damaged: did not resume from 10"
diff <(cols "$work/a/log.csv") <(cols "$work/bad/log.csv") >&2 ||
	fail "shard 1 damaged: losses differ from the uninterrupted run"
cmp "$work/a/model_00000020.bin" "$work/bad/model_00000020.bin" ||
	fail "shard 1 damaged: final weights differ"
for r in 0 1; do
	cmp "$work/a/shard_00000020_0000$r.bin" "$work/bad/shard_00000020_0000$r.bin" ||
		fail "shard 1 damaged: final shard $r differs"
done
echo "ok: $(cat "$work/err")"
pass "each rank reads only the shards it loads, and the ranks fall back together"
