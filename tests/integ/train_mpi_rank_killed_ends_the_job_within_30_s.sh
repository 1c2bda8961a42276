#!/usr/bin/env bash
# Faults: kill -9 of one of 2 MPI ranks at a random step of a long run: the job (mpirun and the
# rank left) exits non-zero within 30 s, rather than the survivor waiting forever in its next
# all-reduce. Open MPI's mpirun guarantees it: it watches its processes and ends the job when
# one dies by a signal; this test holds it to that, for rank 1 and for rank 0 (the one that
# writes the run's files).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
runs=()
# a failed check leaves no rank behind: the jobs, and every process of a run into $work
kill_runs() {
	local p
	for p in "${runs[@]}" $(pgrep -f -- "--out $work/run"); do kill -KILL "$p" 2>/dev/null; done
	return 0
}
on_exit kill_runs
limit=120 # seconds a job may run in all
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2
	--total-batch-tokens 128 --steps 100000 --warmup 1 --eval-every 0 --ckpt-every 50
	--threads 1)

# the pid of rank $2 among the processes of the run into $1 (its --out is in their command line)
rank_pid() {
	local out=$1 rank=$2 p
	for p in $(pgrep -f -- "--out $out( |\$)"); do
		[ "$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | head -1)" = "$FERRY" ] || continue
		tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null |
			grep -qx "OMPI_COMM_WORLD_RANK=$rank" && { echo "$p"; return 0; }
	done
	return 1
}

kill_rank() { # rank
	local rank=$1 out="$work/run$1" at=$((3 + RANDOM % 20)) i=0 pid t0 t1 rc=0
	timeout "$limit" mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 \
		"$FERRY" train "${args[@]}" --out "$out" >"$work/run$rank.out" 2>"$work/run$rank.err" &
	local job=$!
	runs+=("$job")
	# wait for step $at in rank 0's log
	# (the file is missing until mpirun opens it: grep then says nothing, which is 0 steps)
	while n=$(grep -c '^step' "$work/run$rank.out" 2>/dev/null); [ "${n:-0}" -lt "$at" ]; do
		kill -0 "$job" 2>/dev/null || { cat "$work/run$rank.err" >&2; fail "the run ended early"; }
		i=$((i + 1))
		[ "$i" -lt 6000 ] || fail "no step $at within 60 s"
		sleep 0.01
	done
	pid=$(rank_pid "$out" "$rank") || fail "no process of rank $rank"
	t0=$(date +%s%N)
	kill -KILL "$pid"
	wait "$job" || rc=$?
	t1=$(date +%s%N)
	local ms=$(((t1 - t0) / 1000000))
	[ "$rc" -ne 0 ] || fail "rank $rank killed at step $at: the job exited 0"
	[ "$rc" -ne 124 ] || fail "rank $rank killed at step $at: the job still ran after $limit s"
	[ "$ms" -lt 30000 ] || fail "rank $rank killed at step $at: the job took $ms ms to end"
	# nothing of the run is left
	! pgrep -f -- "--out $out( |\$)" >/dev/null || fail "a rank of the run is still alive"
	echo "ok: rank $rank killed at step $at: the job exited $rc after $ms ms"
}

kill_rank 1
kill_rank 0
pass "a killed rank ends the job within 30 s"
