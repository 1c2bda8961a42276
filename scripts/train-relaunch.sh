#!/usr/bin/env bash
# Relaunches a `ferry train` job from its newest checkpoint that verifies until the run is done:
# the shell loop llm.c leaves to its users, for a job that lost a rank, a node or its time.
# docs/train.md, "Failures and relaunch"; tests/integ/train_relaunch_*.sh.
set -uo pipefail

usage() {
	cat <<'EOF'
usage: scripts/train-relaunch.sh [--max-restarts N] [--delay S] [--] [LAUNCHER...] ferry train ARGS...

Runs the command; while it exits non-zero, runs it again from the newest checkpoint of its
run directory that verifies: LAUNCHER (mpirun -np 2, srun, nothing ...) stays as given, and
`ferry train ARGS` becomes `ferry train --resume DIR` plus those of ARGS a resumed run takes
(--steps, --threads, --stop-at, --max-bad-steps, --device, --precision, --zero-stage,
--overlap, --bucket-kib, --pipeline-parallel, --verbose, --cuda-graph). DIR is ARGS' --out DIR
(or --resume DIR). The first attempt runs as given unless DIR holds a checkpoint already.

  --max-restarts N  restarts after a failed attempt before giving up (default 10); the last
                    attempt's exit status is then this script's, after one line naming it
  --delay S         seconds to wait before each restart (default 5), so that a dead job's
                    processes are gone and the run directory's lock is free
  --help            this text

Every non-zero exit counts as a failure to resume from, 75 (stopped by a signal with a
checkpoint) included. SIGTERM, SIGUSR1 or SIGHUP sent to this script are passed on to the job
once and end the relaunching (the job then writes a checkpoint and exits 75); SIGINT (Ctrl-C,
which the terminal sends to the job as well) only ends the relaunching.
Exit status: the job's last one; 2 for a bad command line.
EOF
}

die() {
	echo "train-relaunch: $*" >&2
	exit 2
}

is_count() { [[ $1 =~ ^[0-9]+$ ]] && [ "${#1}" -le 9 ]; }

max_restarts=10
delay=5
while [ $# -gt 0 ]; do
	case $1 in
	--help | -h)
		usage
		exit 0
		;;
	--max-restarts | --delay)
		[ $# -ge 2 ] || die "$1 needs a value (see --help)"
		is_count "$2" || die "$1: '$2' is not a non-negative integer"
		if [ "$1" = --delay ]; then delay=$2; else max_restarts=$2; fi
		shift 2
		;;
	--max-restarts=* | --delay=*)
		v=${1#*=}
		is_count "$v" || die "${1%%=*}: '$v' is not a non-negative integer"
		if [ "${1%%=*}" = --delay ]; then delay=$v; else max_restarts=$v; fi
		shift
		;;
	--)
		shift
		break
		;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || die "no command given (see --help)"
cmd=("$@")

# `ferry train`: the first word named ferry (any path, ferry-cuda too) followed by `train`
at=-1
for ((i = 0; i + 1 < ${#cmd[@]}; i++)); do
	name=${cmd[i]##*/}
	if [[ $name == ferry* ]] && [ "${cmd[i + 1]}" = train ]; then
		at=$i
		break
	fi
done
[ "$at" -ge 0 ] || die "no 'ferry train' in the command '${cmd[*]}'"

# Split ARGS into the run directory and what a resumed run takes. An option this script does
# not know is refused: it cannot tell whether a value follows it, nor whether --resume takes
# it (train/settings.c, args_table, is the list).
dir=
resume_given=false
kept=()
args=("${cmd[@]:at+2}")
for ((i = 0; i < ${#args[@]}; i++)); do
	a=${args[i]}
	name=${a%%=*}
	case $name in
	--verbose | --cuda-graph | --help)
		[ "$name" = "$a" ] || die "$name takes no value: '$a'"
		kept+=("$a")
		continue
		;;
	--out | --resume | --steps | --threads | --stop-at | --max-bad-steps | --device | \
		--precision | --zero-stage | --data | --val | --model | --layers | --heads | --dim | \
		--init | --vocab | --seq-len | --batch | --total-batch-tokens | --lr | --warmup | \
		--lr-final-frac | --weight-decay | --grad-clip | --seed | --eval-every | \
		--val-batches | --ckpt-every | --keep | --sample | --loader-block-bytes | \
		--overlap | --bucket-kib | --loader-window-blocks | --pipeline-parallel) ;;
	*) die "ferry train argument '$a' is not one this script knows (see --help)" ;;
	esac
	if [ "$name" = "$a" ]; then
		[ $((i + 1)) -lt ${#args[@]} ] || die "ferry train $a needs a value"
		i=$((i + 1))
		v=${args[i]}
		both=("$a" "$v")
	else
		v=${a#*=}
		both=("$a")
	fi
	case $name in
	--out) dir=$v ;;
	--resume)
		dir=$v
		resume_given=true
		;;
	--steps | --threads | --stop-at | --max-bad-steps | --device | --precision | --zero-stage | \
		--overlap | --bucket-kib | --pipeline-parallel)
		kept+=("${both[@]}")
		;;
	esac
done
[ -n "$dir" ] || die "ferry train needs --out DIR (or --resume DIR): the run to relaunch"
resume_cmd=("${cmd[@]:0:at+2}" --resume "$dir" "${kept[@]}" "${cmd[@]:at+2+${#args[@]}}")

# a checkpoint counts once its state file (a sharded one: its DONE marker) and its model file
# exist (train/ckpt.c list_steps); which one verifies is ferry's to decide
has_checkpoint() {
	local s
	for s in "$dir"/state_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].bin; do
		[ -f "$s" ] && [ -f "$dir/model_${s##*/state_}" ] && return 0
	done
	for s in "$dir"/DONE_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
		[ -f "$s" ] && [ -f "$dir/model_${s##*/DONE_}.bin" ] && return 0
	done
	return 1
}

child=
stopping=
pass_on() {
	stopping=$1
	[ -n "$child" ] && kill -"$1" "$child" 2>/dev/null
}
trap 'pass_on TERM' TERM
trap 'pass_on USR1' USR1
trap 'pass_on HUP' HUP
trap 'stopping=INT' INT

restarts=0
for ((attempt = 1; ; attempt++)); do
	if $resume_given || has_checkpoint; then
		run=("${resume_cmd[@]}")
	else
		run=("${cmd[@]}")
	fi
	echo "train-relaunch: attempt $attempt: ${run[*]}" >&2
	start=$SECONDS
	"${run[@]}" &
	child=$!
	# a trapped signal ends `wait` early with 128+n while the job runs on: wait again
	while :; do
		wait "$child"
		status=$?
		kill -0 "$child" 2>/dev/null || break
	done
	# the job's own status, also where a trap ended the last wait as it exited (bash keeps it)
	wait "$child"
	status=$?
	child=
	took=$((SECONDS - start))
	if [ "$status" = 0 ]; then
		echo "train-relaunch: done: attempt $attempt exited 0 after $took s ($restarts restart(s))" >&2
		exit 0
	fi
	if [ -n "$stopping" ]; then
		echo "train-relaunch: stopped by SIG$stopping: attempt $attempt exited with status $status after $took s; not restarting" >&2
		exit "$status"
	fi
	if [ "$restarts" -ge "$max_restarts" ]; then
		echo "train-relaunch: giving up after $restarts restart(s): attempt $attempt exited with status $status after $took s" >&2
		exit "$status"
	fi
	restarts=$((restarts + 1))
	echo "train-relaunch: attempt $attempt exited with status $status after $took s; restart $restarts of $max_restarts from the newest checkpoint in $dir in $delay s" >&2
	sleep "$delay" &
	wait $! || true
	if [ -n "$stopping" ]; then
		echo "train-relaunch: stopped by SIG$stopping before restart $restarts; last status $status" >&2
		exit "$status"
	fi
done
