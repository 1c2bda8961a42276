#!/bin/bash
# tests/gpu/train_nccl_rank_killed_gpu.sh: the NCCL watchdog (issue 12, comm_nccl.c). 2 GPU ranks
# started by hand (torchrun's variables, no launcher to end the job) train a long d2 run with
# --comm-timeout 20; at a random step from 3 to 12 one rank gets kill -9. The other must exit
# non-zero within the timeout + 30 s (50 s) with exactly one line of the form
#   ferry train: nccl: rank R: COLLECTIVE not done after S s (--comm-timeout 20): ...
#   ferry train: nccl: rank R: COLLECTIVE failed after S s: NCCL'S ERROR; aborting
# naming itself, rather than wait in its collective for ever. Rank 1 is killed, then rank 0 (the
# one that writes the run's files). Its exit status, the time it took and the line are shown.
# Exits 77 (SKIP) with fewer than 2 GPUs.
#   usage: FERRY_BUILD=DIR tests/gpu/train_nccl_rank_killed_gpu.sh
# shellcheck source=tests/gpu/train_nccl_lib.sh disable=SC1091
source "$(dirname "$0")/train_nccl_lib.sh"
TIMEOUT=20
LIMIT=$((TIMEOUT + 30))
ARGS=(--data "$WORK/data/train_*.bin" --model d2 --seq-len 128 --batch 4 --steps 100000
	--warmup 2 --lr 1e-3 --seed 7 --eval-every 0 --ckpt-every 0 --device cuda
	--comm-timeout "$TIMEOUT")

kill_rank() { # victim
	local victim=$1 survivor=$((1 - $1)) at=$((3 + RANDOM % 10)) i n t0 t1 st=0 ms
	local name=kill$victim
	start_ranks "$name" 2 "${ARGS[@]}"
	local vpid=${RANK_PIDS[$victim]} spid=${RANK_PIDS[$survivor]}
	# rank 0's step lines (its stdout is line-buffered); 180 s for NCCL's setup and the first
	# steps
	for ((i = 0; ; i++)); do
		n=$(grep -c '^step' "$WORK/$name.0.out" 2>/dev/null)
		[ "${n:-0}" -lt "$at" ] || break
		if ! kill -0 "$vpid" 2>/dev/null || ! kill -0 "$spid" 2>/dev/null; then
			fail "rank $victim's run ended before step $at: $(tail -3 "$WORK/$name".*.out)"
			return
		fi
		[ "$i" -lt 18000 ] || {
			fail "no step $at within 180 s"
			return
		}
		sleep 0.01
	done
	t0=$(date +%s%N)
	kill -KILL "$vpid"
	for ((i = 0; i < LIMIT * 10 + 50; i++)); do
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.1
	done
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	if kill -0 "$spid" 2>/dev/null; then
		fail "rank $victim killed at step $at: rank $survivor still runs after $ms ms"
		kill -KILL "$spid"
	fi
	wait "$spid" || st=$?
	wait "$vpid" 2>/dev/null
	local lines
	lines=$(grep -E "^ferry train: nccl: rank $survivor: .* (not done|failed) after [0-9.]+ s" \
		"$WORK/$name.$survivor.out")
	echo "rank $victim killed at step $at: rank $survivor exited $st after $ms ms: $lines"
	[ "$st" -ne 0 ] || fail "rank $survivor exited 0 after rank $victim was killed"
	[ "$ms" -le $((LIMIT * 1000)) ] || fail "rank $survivor took $ms ms (limit $LIMIT s)"
	[ "$(printf '%s\n' "$lines" | grep -c .)" = 1 ] ||
		fail "rank $survivor did not say it in one line: $(tail -5 "$WORK/$name.$survivor.out")"
}

echo "== kill -9 of rank 1, then of rank 0, at a random step"
kill_rank 1
kill_rank 0

[ "$FAILED" = 0 ] && echo "PASS: a GPU rank killed ends the other within $LIMIT s" || exit 1
