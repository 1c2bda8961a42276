#!/usr/bin/env bash
# Layouts the ranks cannot take (issue 13) end with one line from rank 0 and a non-zero exit
# before any data is read or --out made: tensor ranks that do not divide the heads, more
# pipeline stages than layers, a world size that is no multiple of tensor x pipeline,
# --tensor-parallel 0, and pipeline parallelism on --device cuda (the GPU trainer has none).
# Two ranks given different layouts (one of them bad) end together in the bad one's line
# instead of one leaving the other waiting in a collective; and a run saved with --sample is
# refused when resumed on tensor or pipeline ranks (the saved settings are checked too).
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
bad 1 "--device cuda --pipeline-parallel needs GPU ranks that talk over NCCL" --pipeline-parallel 2 --device cuda

# one rank told tensor 3 (bad on 2 ranks), the other tensor 2 (good): every rank ends in time
rc=0
timeout 60 mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 \
	-np 1 "$FERRY" train "${args[@]}" --heads 6 --tensor-parallel 2 --out "$work/mixed" : \
	-np 1 "$FERRY" train "${args[@]}" --heads 6 --tensor-parallel 3 --out "$work/mixed" \
	>"$work/mixed.out" 2>"$work/mixed.err" || rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "ranks of different layouts: exit status $rc (124: a hang)"
grep -qF "2 rank(s) do not split into tensor 3" "$work/mixed.err" ||
	fail "ranks of different layouts: no line naming the bad one: $(head -3 "$work/mixed.err")"
[ "$(grep -c '^ferry train:' "$work/mixed.err")" = 1 ] ||
	fail "ranks of different layouts: not one line: $(grep '^ferry train:' "$work/mixed.err")"
echo "ok: ranks given tensor 2 and tensor 3 end together: $(grep '^ferry train:' "$work/mixed.err")"

# a run saved with --sample resumed on tensor 2 and on pipeline 2
"$FERRY" train "${args[@]}" --heads 2 --sample 4 --stop-at 1 --eval-every 1 --out "$work/sampled" \
	>"$work/sampled.out" 2>&1 || fail "the --sample run failed: $(tail -3 "$work/sampled.out")"
for layout in "--tensor-parallel 2" "--pipeline-parallel 2"; do
	before=$(md5sum <"$work/sampled/log.csv")
	rc=0
	# shellcheck disable=SC2086 # the layout is two words
	timeout 60 "${mpirun[@]}" -np 2 "$FERRY" train --resume "$work/sampled" $layout \
		>"$work/resume.out" 2>"$work/resume.err" || rc=$?
	[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "resume of a --sample run on $layout: exit status $rc"
	grep -q "^ferry train: .*--sample" "$work/resume.err" ||
		fail "resume of a --sample run on $layout: no --sample line: $(head -3 "$work/resume.err")"
	[ "$(md5sum <"$work/sampled/log.csv")" = "$before" ] || fail "resume on $layout trained before refusing"
	echo "ok: a --sample run resumed with $layout: $(grep -m1 '^ferry train:' "$work/resume.err")"
done
pass "each bad layout ends in its one line before any work"
