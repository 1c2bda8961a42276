#!/usr/bin/env bash
# Two `ferry train` runs on one --out directory: while the first runs, a second (new, or
# --resume) is refused within seconds with one line and a non-zero exit, and changes none of
# the first's files; the first then ends as a run alone would, bit for bit. A run killed with
# -9 leaves its lock file behind, and that file blocks nothing: --resume goes on.
source "$(dirname "$0")/train_lib.sh"
work=$T
first=""
stop_first() { # the first run may be stopped (SIGSTOP): it must go before $T is removed
	[ -n "$first" ] || return 0
	kill -CONT "$first" 2>/dev/null && kill -9 "$first" 2>/dev/null
	wait "$first" 2>/dev/null
}
on_exit stop_first
make_shards "$work/data"
args=(--data "$work/data/train_*.bin" --layers 2 --heads 2 --dim 32 --seq-len 32 --batch 4
	--total-batch-tokens 256 --steps 400 --lr 3e-3 --warmup 4 --seed 7 --eval-every 0
	--ckpt-every 50 --keep 2 --threads 1)
# A step of this model takes a few ms: the first run is long enough (about 2 s here) that the
# poll below finds it alive with a checkpoint written, whatever the load; which checkpoint
# that is does not matter (older ones are rotated out with --keep 2).
have_ckpt() { compgen -G "$1/state_*.bin" >/dev/null; }
cols() { cut -d, -f1-4,8 "$1"; }
# What a files' listing and contents look like: name, size and sha256 of each.
snapshot() { (cd "$1" && find . -type f -printf '%p %s\n' | sort && find . -type f -exec sha256sum {} + | sort -k2); }

"$FERRY" train "${args[@]}" --out "$work/alone" >/dev/null

# The first run, stopped (SIGSTOP) once it has written a checkpoint, so that its files hold
# still while the second tries.
"$FERRY" train "${args[@]}" --out "$work/run" >"$work/first.out" 2>&1 &
first=$!
for _ in $(seq 300); do
	have_ckpt "$work/run" && break
	kill -0 "$first" 2>/dev/null || { cat "$work/first.out" >&2; fail "the first run ended early"; }
	sleep 0.05
done
have_ckpt "$work/run" || fail "the first run wrote no checkpoint in 15 s"
kill -STOP "$first" || fail "the first run ended before it could be stopped"
before=$(snapshot "$work/run")

second() { # what: the second run's arguments
	local what=$1 t0 rc=0
	shift
	t0=$(date +%s%N)
	timeout 20 "$FERRY" train "$@" >"$work/second.out" 2>"$work/second.err" || rc=$?
	local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
	[ "$rc" -ne 0 ] || fail "$what: a second run on a live run's directory was accepted"
	[ "$rc" -ne 124 ] || fail "$what: the second run waited for the first (20 s)"
	[ "$rc" -lt 128 ] || fail "$what: the second run died of signal $((rc - 128))"
	[ "$ms" -lt 5000 ] || fail "$what: refused only after $ms ms"
	[ "$(grep -c . "$work/second.err")" = 1 ] ||
		fail "$what: not one line on stderr: $(cat "$work/second.err")"
	grep -q "in use" "$work/second.err" || fail "$what: $(cat "$work/second.err")"
	grep -q "pid $first" "$work/second.err" || fail "$what: the holder is not named: $(cat "$work/second.err")"
	[ ! -s "$work/second.out" ] || fail "$what: printed on stdout: $(cat "$work/second.out")"
	[ "$(snapshot "$work/run")" = "$before" ] || fail "$what: the first run's files changed"
	echo "ok: $what -> rc $rc in $ms ms: $(cat "$work/second.err")"
}
second "a new run with the same --out" "${args[@]}" --seed 8 --out "$work/run"
second "--resume of the live run" --resume "$work/run"
second "--resume of the live run, raising --steps" --resume "$work/run" --steps 50

kill -CONT "$first"
wait "$first" || { cat "$work/first.out" >&2; fail "the first run failed after the second tried"; }
first=""
diff <(cols "$work/alone/log.csv") <(cols "$work/run/log.csv") >&2 ||
	fail "the first run's log differs from the same run alone"
cmp "$work/alone/state_00000400.bin" "$work/run/state_00000400.bin" ||
	fail "the first run's final state differs from the same run alone"

# A run killed with -9 leaves its lock file; the next run on the directory is not blocked.
"$FERRY" train "${args[@]}" --out "$work/killed" >/dev/null 2>&1 &
first=$!
for _ in $(seq 300); do
	have_ckpt "$work/killed" && break
	sleep 0.05
done
kill -9 "$first"
wait "$first" 2>/dev/null || true
first=""
[ -f "$work/killed/.ferry-train.lock" ] || fail "no lock file left by the killed run"
timeout 60 "$FERRY" train --resume "$work/killed" >/dev/null 2>"$work/resume.err" ||
	fail "the killed run's lock file blocked --resume: $(cat "$work/resume.err")"
[ "$(tail -1 "$work/killed/log.csv" | cut -d, -f1)" = 400 ] || fail "the resumed run did not finish"
pass "a second run on one --out directory is refused"
