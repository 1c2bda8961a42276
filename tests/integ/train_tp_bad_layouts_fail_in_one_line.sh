#!/usr/bin/env bash
# Layouts the ranks cannot take (issue 13) end with one line from rank 0 and a non-zero exit
# before any data is read or --out made: tensor ranks that do not divide the heads, more
# pipeline stages than layers, a world size that is no multiple of tensor x pipeline,
# --tensor-parallel 0, and pipeline parallelism on --device cuda (the GPU trainer has none).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 3 --dim 24 --seq-len 32 --steps 2
	--batch 2 --eval-every 0)
n=0
# bad NP WANT ARGS...: the run fails, stderr holds WANT (one ferry line), --out never made
bad() {
	local np=$1 want=$2 rc=0
	shift 2
	n=$((n + 1))
	local out=$work/out$n
	if [ "$np" = 1 ]; then
		timeout 60 "$FERRY" train "${args[@]}" "$@" --out "$out" >"$work/$n.out" 2>"$work/$n.err" || rc=$?
	else
		timeout 60 "${mpirun[@]}" -np "$np" "$FERRY" train "${args[@]}" "$@" --out "$out" \
			>"$work/$n.out" 2>"$work/$n.err" || rc=$?
	fi
	[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "$*: exit status $rc"
	grep -qF -- "$want" "$work/$n.err" || fail "$*: no '$want' in: $(head -3 "$work/$n.err")"
	[ "$(grep -c '^ferry train:' "$work/$n.err")" = 1 ] ||
		fail "$*: not one line: $(grep '^ferry train:' "$work/$n.err")"
	[ ! -e "$out" ] || fail "$*: --out was made before the layout was refused"
	echo "ok: $*: $(grep '^ferry train:' "$work/$n.err")"
}
bad 2 "--tensor-parallel 2 does not divide the model's 3 heads" --tensor-parallel 2
bad 2 "--pipeline-parallel 2 is more than the model's 1 layers" --pipeline-parallel 2 --layers 1
bad 3 "3 rank(s) do not split into tensor 2 x pipeline 1" --tensor-parallel 2 --heads 4
bad 1 "--tensor-parallel: '0' is not an integer in [1, 1024]" --tensor-parallel 0
bad 1 "--pipeline-parallel: '0' is not an integer in [1, 1024]" --pipeline-parallel 0
bad 1 "not with --device cuda" --pipeline-parallel 2 --device cuda
pass "each bad layout ends in its one line before any work"
