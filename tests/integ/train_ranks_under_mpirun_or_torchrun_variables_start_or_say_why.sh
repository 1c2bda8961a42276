#!/usr/bin/env bash
# Launch: `ferry train` reads its place in the job from the launcher's variables
# (train/launch.c). CPU ranks talk over MPI, so the 2-rank run started by mpirun trains, and the
# same run started with torchrun's variables set by hand (RANK, WORLD_SIZE, LOCAL_RANK,
# MASTER_ADDR, MASTER_PORT) and no mpirun ends at once with one line saying to use mpirun or
# srun, instead of each rank training alone into one --out. Variables that contradict each
# other, and GPU ranks in a build without CUDA (so without NCCL) are each one line and exit 1.
# In a build without MPI, the one check is that CPU ranks of an srun step get one line.
#
# GPU ranks hand out the NCCL id by MPI_Bcast under mpirun and by a TCP rendezvous otherwise;
# without a GPU, tests/integ/launch_driver does that handout alone: under mpirun, under a real
# torchrun (whose own store holds MASTER_PORT: the rendezvous takes MASTER_PORT + 1) and by
# hand with a rank that never arrives (one line naming it, within FERRY_RENDEZVOUS_TIMEOUT).
source "$(dirname "$0")/train_lib.sh"
work=$T
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 1 --heads 1 --dim 16 --seq-len 32 --batch 2
	--total-batch-tokens 128 --steps 3 --warmup 1 --eval-every 0 --ckpt-every 0 --threads 1)
# the variables of no launcher, so that only what a case sets is seen
clean=(env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u LOCAL_WORLD_SIZE -u MASTER_ADDR -u MASTER_PORT
	-u TORCHELASTIC_RUN_ID -u TORCHELASTIC_RESTART_COUNT -u OMPI_COMM_WORLD_SIZE
	-u OMPI_COMM_WORLD_RANK -u PMI_RANK -u PMI_SIZE -u SLURM_PROCID -u SLURM_STEP_ID
	-u SLURM_STEPID -u SLURM_STEP_NUM_TASKS -u SLURM_LOCALID -u MPI_LOCALRANKID
	-u FERRY_RENDEZVOUS_PORT -u FERRY_RENDEZVOUS_TIMEOUT)

# one_line DESC WANT VAR=VALUE...: ferry train with these variables (and no others of a
# launcher) exits 1 within 10 s with one line on stderr that contains WANT, and writes no --out
extra=()
one_line() {
	local desc=$1 want=$2 out rc=0 t0 t1
	shift 2
	out="$work/out.$RANDOM"
	t0=$(date +%s%N)
	timeout 60 "${clean[@]}" "$@" "$FERRY" train "${args[@]}" "${extra[@]}" --out "$out" \
		>"$work/one.out" 2>"$work/one.err" </dev/null || rc=$?
	t1=$(date +%s%N)
	[ "$rc" = 1 ] || { cat "$work/one.err" >&2; fail "$desc: exit $rc, want 1"; }
	[ "$(grep -c . "$work/one.err")" = 1 ] ||
		{ sed 's/^/  stderr: /' "$work/one.err" >&2; fail "$desc: not one line on stderr"; }
	grep -qF -- "$want" "$work/one.err" ||
		fail "$desc: '$(cat "$work/one.err")' does not say '$want'"
	[ $(((t1 - t0) / 1000000)) -lt 10000 ] || fail "$desc: took $(((t1 - t0) / 1000000)) ms"
	[ ! -e "$out" ] || fail "$desc: wrote $out"
	echo "ok: $desc -> $(cat "$work/one.err")"
}

if ! build_has MPI; then
	one_line "CPU ranks of an srun step, no MPI in the build" \
		"2 CPU ranks started by srun (Slurm), but this ferry was built without MPI" \
		SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=2 SLURM_STEP_ID=0 SLURM_LOCALID=1 SLURM_NODEID=0 \
		SLURM_STEP_TASKS_PER_NODE=2
	pass "CPU ranks of an srun step in a build without MPI get one line"
fi
need_mpi
need_cmd torchrun
drv=$FERRY_BUILD/tests/integ/launch_driver
need_built "$drv"
# torchrun 1.13 (Debian's) on Python 3.11 fails unless redirects and tee are given: its "0"
# parses to None there. -r 1 -t 1 keeps each rank's stdout, tagged, on torchrun's.
torchrun=(torchrun -r 1 -t 1 --no_python)

# mpirun: 2 ranks train
mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 \
	"$FERRY" train "${args[@]}" --out "$work/mpi" >"$work/mpi.out" 2>"$work/mpi.err" ||
	{ cat "$work/mpi.err" >&2; fail "2 ranks under mpirun did not train"; }
[ "$(grep -c '^step' "$work/mpi.out")" = 3 ] || fail "mpirun: rank 0 did not log 3 steps"
echo "ok: mpirun -np 2 trained 3 steps"

# the same run by hand-set torchrun variables, both ranks at once, as torchrun would start them
for r in 0 1; do
	(
		rc=0
		timeout 60 "${clean[@]}" RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 \
			MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$FERRY" train "${args[@]}" \
			--out "$work/hand" >"$work/hand$r.out" 2>"$work/hand$r.err" </dev/null || rc=$?
		echo "$rc" >"$work/hand$r.rc"
	) &
done
wait
for r in 0 1; do
	[ "$(cat "$work/hand$r.rc")" = 1 ] || fail "rank $r under torchrun variables: exit $(cat "$work/hand$r.rc")"
	[ "$(grep -c . "$work/hand$r.err")" = 1 ] && grep -q "start them with mpirun or srun" "$work/hand$r.err" ||
		{ cat "$work/hand$r.err" >&2; fail "rank $r under torchrun variables: not the one line"; }
done
[ ! -e "$work/hand" ] || fail "ranks under torchrun variables wrote their --out"
echo "ok: 2 CPU ranks under hand-set torchrun variables -> $(cat "$work/hand0.err")"

one_line "torchrun's own variables, CPU" "2 CPU ranks started by torchrun" \
	RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 \
	MASTER_PORT=29500 TORCHELASTIC_RUN_ID=t TORCHELASTIC_RESTART_COUNT=0
one_line "rank not below the world size" "rank 2 is not below the world size 2" \
	RANK=2 WORLD_SIZE=2
one_line "RANK without WORLD_SIZE" "WORLD_SIZE is not set" RANK=0
one_line "a rank that is not a number" "OMPI_COMM_WORLD_RANK=x is not a whole number" \
	OMPI_COMM_WORLD_RANK=x OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_RANK=0 \
	OMPI_COMM_WORLD_LOCAL_SIZE=1
one_line "Hydra without a local rank" "MPI_LOCALRANKID is not" PMI_RANK=1 PMI_SIZE=2
if build_has CUDA; then
	echo "skipped: GPU ranks in a build without CUDA (this build has CUDA)"
else
	extra=(--device cuda)
	one_line "GPU ranks, no NCCL in the build" \
		"2 GPU ranks started by RANK/WORLD_SIZE set by hand talk over NCCL" \
		RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500
	extra=()
fi
# ids_agree FILE N: N lines "rank R holds id H", ranks 0..N-1, one H
ids_agree() {
	local n
	n=$(grep -o 'rank [0-9]* holds id [0-9a-f]*' "$1" | sort -u | wc -l)
	[ "$n" = "$2" ] || { cat "$1" >&2; fail "$3: $n of $2 ranks hold an id"; }
	n=$(grep -o 'holds id [0-9a-f]*' "$1" | sort -u | wc -l)
	[ "$n" = 1 ] || { cat "$1" >&2; fail "$3: the ranks hold $n different ids"; }
	echo "ok: $3: $2 ranks hold one id ($(grep -o 'holds id [0-9a-f]*' "$1" | head -1))"
}

# the id by MPI_Bcast under mpirun
timeout 60 mpirun --allow-run-as-root --oversubscribe -np 3 "$drv" share >"$work/mpi.ids" \
	2>&1 || { cat "$work/mpi.ids" >&2; fail "mpirun: the id handout failed"; }
grep -q 'rank 2 of 3, local rank 2 of 3, mpirun (Open MPI), mpi 1' "$work/mpi.ids" ||
	{ cat "$work/mpi.ids" >&2; fail "mpirun: rank 2's launch not read"; }
ids_agree "$work/mpi.ids" 3 "mpirun, MPI_Bcast"

# the id by the rendezvous under a real torchrun, beside its store on MASTER_PORT
port=$(free_port)
timeout 120 "${clean[@]}" "${torchrun[@]}" --nproc_per_node 3 --master_port "$port" "$drv" share \
	>"$work/torchrun.ids" 2>&1 || { cat "$work/torchrun.ids" >&2; fail "torchrun: the id handout failed"; }
grep -q "rank 1 of 3, local rank 1 of 3, torchrun, mpi 0, restart 0, rendezvous port $((port + 1))" \
	"$work/torchrun.ids" || { cat "$work/torchrun.ids" >&2; fail "torchrun: rank 1's launch not read"; }
ids_agree "$work/torchrun.ids" 3 "torchrun, TCP rendezvous on MASTER_PORT + 1"
# ... which is why it is not MASTER_PORT: there torchrun's store is listening
port=$(free_port)
rc=0
timeout 120 "${clean[@]}" FERRY_RENDEZVOUS_PORT="$port" FERRY_RENDEZVOUS_TIMEOUT=5 \
	"${torchrun[@]}" --nproc_per_node 2 --master_port "$port" "$drv" share >"$work/clash" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "rank 0 cannot listen on port $port: Address already in use" "$work/clash" ||
	{ cat "$work/clash" >&2; fail "torchrun's store did not hold MASTER_PORT (exit $rc)"; }
echo "ok: on MASTER_PORT itself rank 0 cannot listen: torchrun's store holds it"

# CPU ranks of ferry train under a real torchrun: the line, from each, and torchrun fails
port=$(free_port)
rc=0
timeout 120 "${clean[@]}" "${torchrun[@]}" --nproc_per_node 2 --master_port "$port" \
	"$FERRY" train "${args[@]}" --out "$work/torchrun" >"$work/torchrun.train" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "ferry train under torchrun, CPU: exit $rc"
[ "$(grep -c 'ferry train: launch: 2 CPU ranks started by torchrun' "$work/torchrun.train")" = 2 ] ||
	{ cat "$work/torchrun.train" >&2; fail "ferry train under torchrun, CPU: not the line from both ranks"; }
[ ! -e "$work/torchrun" ] || fail "ferry train under torchrun, CPU: wrote its --out"
echo "ok: ferry train under torchrun, CPU: each rank said why, torchrun exited $rc"

# by hand, rank 2 of 3 never comes: rank 0 names it, rank 1 hears it, within the timeout
port=$(free_port)
t0=$(date +%s%N)
for r in 0 1; do
	(
		rc=0
		timeout 60 "${clean[@]}" RANK=$r WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
			FERRY_RENDEZVOUS_TIMEOUT=2 "$drv" share >"$work/miss$r.out" 2>"$work/miss$r.err" || rc=$?
		echo "$rc" >"$work/miss$r.rc"
	) &
done
wait
ms=$((($(date +%s%N) - t0) / 1000000))
for r in 0 1; do
	[ "$(cat "$work/miss$r.rc")" = 1 ] && [ "$(grep -c . "$work/miss$r.err")" = 1 ] ||
		{ cat "$work/miss$r.err" >&2; fail "rank $r of a rendezvous missing rank 2: exit $(cat "$work/miss$r.rc")"; }
done
grep -qx "launch_driver: rendezvous: rank 2 never arrived within 2 s (port $((port + 1)))" "$work/miss0.err" ||
	fail "rank 0 said '$(cat "$work/miss0.err")'"
grep -q "rank 0 gave up: rank 2 never arrived" "$work/miss1.err" || fail "rank 1 said '$(cat "$work/miss1.err")'"
[ "$ms" -lt 6000 ] || fail "the ranks gave up after $ms ms (timeout 2 s)"
echo "ok: rank 2 never arrived: after $ms ms, rank 0: $(cat "$work/miss0.err"); rank 1: $(cat "$work/miss1.err")"

pass "mpirun trains; the id goes out under mpirun, torchrun and by hand; torchrun-style CPU ranks and bad launch variables get one line"
