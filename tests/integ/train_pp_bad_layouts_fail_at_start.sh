#!/usr/bin/env bash
# Pipeline layouts that cannot run end every rank at start with one line and exit status 1,
# before a step (no log.csv is written): more stages than layers, fewer than 1, stages that do
# not divide the ranks, tensor x pipeline that does not divide them or the heads, and what a
# pipeline does not combine with yet: overlapped buckets, --sample and the GPU trainer. (Tensor
# parallelism and ZeRO combine: train_grid_*.)
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --heads 1 --dim 16 --seq-len 16 --batch 2 --steps 2
	--eval-every 0 --threads 1)
n=0
# refused NP WANT ARGS...: NP ranks (0: no mpirun) give one line matching WANT, status 1
refused() {
	local np=$1 want=$2 out=$work/r$n rc=0
	shift 2
	n=$((n + 1))
	if [ "$np" = 0 ]; then
		timeout 60 "$FERRY" train "${args[@]}" --out "$out" "$@" >"$out.out" 2>"$out.err" ||
			rc=$?
	else
		timeout 60 "${mpirun[@]}" -np "$np" "$FERRY" train "${args[@]}" --out "$out" "$@" \
			>"$out.out" 2>"$out.err" || rc=$?
	fi
	[ "$rc" = 1 ] || fail "$* on $np rank(s): exit status $rc, want 1: $(cat "$out.err")"
	grep -q "^ferry train: $want" "$out.err" || fail "$* on $np rank(s): want '$want', got: $(cat "$out.err")"
	# one line (rank 0's: every rank refuses alike, none aborts the others)
	[ "$(grep -c '^ferry train:' "$out.err")" = 1 ] ||
		fail "$* on $np rank(s): not one line: $(cat "$out.err")"
	[ ! -e "$out/log.csv" ] || fail "$*: a step ran before the refusal"
	[ "$(grep -c '^step' "$out.out")" = 0 ] || fail "$*: a step ran before the refusal"
	echo "ok: $* on $np rank(s): $(grep -m1 '^ferry train:' "$out.err")"
}
refused 2 "--pipeline-parallel 2 is more than the model's 1 layers" --layers 1 --pipeline-parallel 2
refused 0 "--pipeline-parallel: '0' is not an integer in \[1, 1024\]" --layers 2 --pipeline-parallel 0
refused 3 "3 rank(s) do not split into tensor 1 x pipeline 2" --layers 2 --pipeline-parallel 2
refused 0 "1 rank(s) do not split into tensor 1 x pipeline 2" --layers 2 --pipeline-parallel 2
refused 6 "6 rank(s) do not split into tensor 2 x pipeline 2" \
	--layers 2 --heads 2 --pipeline-parallel 2 --tensor-parallel 2
refused 4 "--tensor-parallel 2 does not divide the model's 1 heads" \
	--layers 2 --pipeline-parallel 2 --tensor-parallel 2
refused 2 "--pipeline-parallel 2 with --overlap on" --layers 2 --pipeline-parallel 2 --overlap on
refused 2 "--pipeline-parallel 2 with --sample" --layers 2 --pipeline-parallel 2 --sample 5
# --device cuda: refused before a GPU is looked for (this build may have none; on 1 rank, as MPI
# ranks that say cuda are refused earlier by a build without NCCL)
refused 0 "--device cuda --pipeline-parallel needs GPU ranks that talk over NCCL" \
	--layers 2 --pipeline-parallel 2 --device cuda
pass "bad pipeline layouts end at start with one line"
