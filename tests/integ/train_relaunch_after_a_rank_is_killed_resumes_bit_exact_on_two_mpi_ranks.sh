#!/usr/bin/env bash
# A rank dies: a 2-rank run under scripts/train-relaunch.sh loses one rank (kill -9, rank 0 or
# 1 at random, at a random step after its first checkpoint). The job (mpirun) ends non-zero
# within 30 s, no rank left waiting in a collective; the script resumes it from the newest
# checkpoint with --resume; the finished run's log and final weights and state equal those of
# a run never interrupted, bit for bit.
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
relaunch=$FERRY_SRC/scripts/train-relaunch.sh
bg=
# timeout passes TERM on to the script, the script to mpirun, mpirun to the ranks
kill_run() {
	[ -n "$bg" ] && kill -TERM "$bg" 2>/dev/null
	return 0
}
on_exit kill_run
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2
	--steps 1500 --warmup 4 --seed 11 --eval-every 500 --val "$work/data/val_*.bin"
	--val-batches 2 --ckpt-every 100 --keep 2 --threads 1)
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np 2)
cols() { cut -d, -f1-4,8 "$1"; }
logged() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
now() { date +%s.%N; }

timeout 120 "${mpirun[@]}" "$FERRY" train "${args[@]}" --out "$work/a" >/dev/null ||
	fail "the uninterrupted run failed"

# the relaunched run; killed once its log has passed a random step after the first checkpoint
target=$((101 + RANDOM % 1200))
timeout 180 "$relaunch" --delay 1 --max-restarts 2 -- "${mpirun[@]}" "$FERRY" train \
	"${args[@]}" --out "$work/b" >"$work/b.out" 2>"$work/b.err" &
bg=$!
for ((i = 0; ; i++)); do
	[ "$(logged "$work/b/log.csv")" -le "$target" ] || break
	kill -0 "$bg" 2>/dev/null || fail "the run ended before step $target: $(cat "$work/b.err")"
	[ "$i" -lt 30000 ] || fail "no step $target after 300 s"
	sleep 0.01
done
ls "$work/b"/state_*.bin >/dev/null 2>&1 || fail "no checkpoint at step $target"
# timeout -> train-relaunch.sh -> mpirun -> the two ranks; rank 0's pid is in the lock file
script=$(pgrep -P "$bg")
launcher=$(pgrep -P "$script" mpirun) || fail "no mpirun under the script"
mapfile -t ranks < <(pgrep -P "$launcher")
[ "${#ranks[@]}" = 2 ] || fail "mpirun has ${#ranks[@]} children, want the 2 ranks"
rank0=$(head -1 "$work/b/.ferry-train.lock")
rank=$((RANDOM % 2))
if [ "$rank" = 0 ]; then victim=$rank0; else
	victim=${ranks[0]}
	[ "$victim" != "$rank0" ] || victim=${ranks[1]}
fi
at=$(($(logged "$work/b/log.csv") - 1))
kill -KILL "$victim"
killed=$(now)
log "killed rank $rank (pid $victim) at step $at (target $target)"

# the job ends non-zero within 30 s: the script's line for attempt 1
for ((i = 0; ; i++)); do
	grep -q "attempt 1 exited with status" "$work/b.err" && break
	[ "$i" -lt 3000 ] || fail "mpirun still running 30 s after a rank was killed"
	sleep 0.01
done
ended=$(now)
took=$(awk "BEGIN { printf \"%.1f\", $ended - $killed }")
line=$(grep "attempt 1 exited with status" "$work/b.err")
status=$(sed -n 's/.*attempt 1 exited with status \([0-9]*\) .*/\1/p' <<<"$line")
[[ $status =~ ^[1-9][0-9]*$ ]] || fail "attempt 1: status '$status', want non-zero"
echo "ok: mpirun exited with status $status ${took} s after the kill"

rc=0
wait "$bg" || rc=$?
bg=
[ "$rc" = 0 ] || fail "the relaunched run: exit $rc: $(tail -3 "$work/b.err")"
grep -q "attempt 2: .* train --resume $work/b --steps 1500 --threads 1\$" "$work/b.err" ||
	fail "attempt 2 was not a --resume: $(cat "$work/b.err")"
grep -q "done: attempt 2 exited 0" "$work/b.err" || fail "no done line: $(cat "$work/b.err")"
diff <(cols "$work/a/log.csv") <(cols "$work/b/log.csv") >&2 || fail "losses differ"
cmp "$work/a/model_00001500.bin" "$work/b/model_00001500.bin" || fail "weights differ"
cmp "$work/a/state_00001500.bin" "$work/b/state_00001500.bin" || fail "state differs"
echo "ok: the relaunched run equals the uninterrupted one bit for bit"
pass "rank $rank killed at step $at: mpirun exited $status after $took s; resumed bit-exact"
