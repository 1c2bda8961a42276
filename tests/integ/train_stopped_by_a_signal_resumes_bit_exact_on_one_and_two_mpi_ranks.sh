#!/usr/bin/env bash
# Preemption: SIGTERM (and SIGINT, SIGUSR1) mid-run finish the current step, write a checkpoint
# there and exit 75 ("stopped, resumable"); `--resume` then gives the same losses, weights and
# optimizer state bit for bit as a run never interrupted. With 2 MPI ranks, a signal to rank 0
# alone stops both after the same step. A second signal ends the run at once, checkpoint or not.
source "$(dirname "$0")/train_lib.sh"
work=$T
pids=()
kill_runs() {
	local p
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	return 0
}
on_exit kill_runs
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2
	--steps 1500 --warmup 4 --seed 11 --eval-every 500 --val "$work/data/val_*.bin"
	--val-batches 2 --ckpt-every 1000 --keep 2 --threads 1)
cols() { cut -d, -f1-4,8 "$1"; }
logged() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# run "$@" in the background into $work/$out; once log.csv has 30 steps, send $sig to the pid
# in the run's lock file (rank 0's; not timeout's, which passes on only some signals)
stop_mid_run() { # out sig command...
	local out=$1 sig=$2
	shift 2
	timeout 120 "$@" >"$work/$out.out" 2>"$work/$out.err" &
	local bg=$!
	pids+=("$bg")
	local i=0
	while [ "$(logged "$work/$out/log.csv")" -lt 31 ]; do
		kill -0 "$bg" 2>/dev/null || break
		i=$((i + 1))
		[ "$i" -lt 6000 ] || fail "$out: no progress"
		sleep 0.01
	done
	kill -"$sig" "$(head -1 "$work/$out/.ferry-train.lock")" 2>/dev/null ||
		fail "$out: the run ended before the signal"
	rc=0
	wait "$bg" || rc=$?
}
check_stopped() { # out sig
	[ "$rc" = 75 ] || fail "$1 ($2): exit $rc, want 75: $(cat "$work/$1.err")"
	grep -q "stopped by .* after step [0-9]* with a checkpoint" "$work/$1.out" ||
		fail "$1 ($2): no stop line: $(tail -2 "$work/$1.out")"
	local at
	at=$(sed -n 's/.* after step \([0-9]*\) with a checkpoint.*/\1/p' "$work/$1.out")
	[ "$at" -lt 1500 ] || fail "$1 ($2): ran to the end"
	[ -f "$work/$1/state_$(printf %08d "$at").bin" ] || fail "$1 ($2): no checkpoint at step $at"
	echo "ok: $1: $2 after step $at: exit 75, checkpoint written"
}
check_same() { # uninterrupted resumed
	diff <(cols "$work/$1/log.csv") <(cols "$work/$2/log.csv") >&2 || fail "$2: losses differ"
	cmp "$work/$1/model_00001500.bin" "$work/$2/model_00001500.bin" || fail "$2: weights differ"
	cmp "$work/$1/state_00001500.bin" "$work/$2/state_00001500.bin" || fail "$2: state differs"
	echo "ok: $2: resumed run equals the uninterrupted one bit for bit"
}

timeout 120 "$FERRY" train "${args[@]}" --out "$work/a" >/dev/null
for sig in TERM INT USR1; do
	stop_mid_run "$sig" "$sig" "$FERRY" train "${args[@]}" --out "$work/$sig"
	check_stopped "$sig" "SIG$sig"
	timeout 120 "$FERRY" train --resume "$work/$sig" >/dev/null || fail "$sig: resume failed"
	check_same a "$sig"
done

# a second signal: the process dies of it at once (a step of this model takes about a second)
big=(--data "$work/data/train_*.bin" --layers 4 --heads 4 --dim 256 --seq-len 128 --batch 8
	--steps 50 --eval-every 0 --ckpt-every 0 --threads 1 --out "$work/big")
timeout 120 "$FERRY" train "${big[@]}" >"$work/big.out" 2>&1 &
bg=$!
pids+=("$bg")
while [ "$(logged "$work/big/log.csv")" -lt 2 ]; do
	kill -0 "$bg" 2>/dev/null || fail "second signal: the run ended: $(cat "$work/big.out")"
	sleep 0.01
done
pid=$(head -1 "$work/big/.ferry-train.lock")
kill -TERM "$pid"
sleep 0.2
kill -INT "$pid"
rc=0
wait "$bg" || rc=$?
# timeout reports its command's death by SIGINT as 128 + 2
[ "$rc" = 130 ] || fail "second signal: exit $rc, want 130 (killed by SIGINT)"
! ls "$work/big"/state_*.bin >/dev/null 2>&1 || fail "second signal: a checkpoint was written"
echo "ok: a second signal ends the run at once"

# 2 MPI ranks: SIGTERM to rank 0 only (its pid is in the run's lock file)
if build_has MPI; then
	need_cmd mpirun
	mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np 2)
	timeout 120 "${mpirun[@]}" "$FERRY" train "${args[@]}" --out "$work/m1" >/dev/null
	stop_mid_run m2 TERM "${mpirun[@]}" "$FERRY" train "${args[@]}" \
		--out "$work/m2"
	check_stopped m2 "SIGTERM to rank 0 of 2"
	timeout 120 "${mpirun[@]}" "$FERRY" train --resume "$work/m2" >/dev/null ||
		fail "m2: resume with 2 ranks failed"
	check_same m1 m2
else
	log "the 2-rank leg not run: built without MPI"
fi
pass "a stopped run resumes bit for bit"
