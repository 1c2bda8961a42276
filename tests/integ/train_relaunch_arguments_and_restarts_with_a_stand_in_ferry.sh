#!/usr/bin/env bash
# scripts/train-relaunch.sh on its own, in seconds: a bad command line is one line and status
# 2 with nothing run; the first attempt runs as given, later ones as `ferry train --resume DIR`
# with the options a resumed run takes, behind the same launcher; exit 75 is restarted; N
# restarts then one line naming the last status; a SIGTERM to the script reaches the job once
# and ends the relaunching. The job is a stand-in named ferry that logs its arguments and
# exits as told: the real one, killed and resumed, is
# train_relaunch_after_a_rank_is_killed_resumes_bit_exact_on_two_mpi_ranks.sh.
. "$(dirname "$0")/lib.sh"
relaunch=$FERRY_SRC/scripts/train-relaunch.sh
mkdir "$T/bin"
fake=$T/bin/ferry
# each call: its arguments to calls; then the next line of plan: "STATUS [ckpt] [sleep]"
cat >"$fake" <<'EOF'
#!/usr/bin/env bash
T=${0%/bin/ferry}
echo "${LAUNCHED_BY:+[$LAUNCHED_BY] }${0##*/} $*" >>"$T/calls"
n=$(wc -l <"$T/calls")
read -r status what <<<"$(sed -n "${n}p" "$T/plan")"
out=
for ((i = 1; i <= $#; i++)); do
	[ "${!i}" = --out ] && { j=$((i + 1)); out=${!j}; }
done
if [ "$what" = ckpt ]; then
	mkdir -p "$out"
	touch "$out/model_00000010.bin" "$out/state_00000010.bin"
fi
if [ "$what" = sleep ]; then
	trap 'echo TERM >>"$T/signals"; kill $!; exit 75' TERM
	sleep 30 &
	wait
fi
exit "${status:-0}"
EOF
chmod +x "$fake"
reset() {
	rm -rf "$T/calls" "$T/signals" "$T/run"
	printf '%s\n' "$@" >"$T/plan"
}

# bad command lines: one line on stderr, status 2, the job never started
bad() { # description args...
	local desc=$1 rc=0 n
	shift
	reset 0
	timeout 10 "$relaunch" "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
	[ "$rc" = 2 ] || fail "$desc: exit $rc, want 2: $(cat "$T/err")"
	n=$(grep -c . "$T/err" || true)
	[ "$n" = 1 ] || fail "$desc: $n lines on stderr, want one: $(cat "$T/err")"
	[ ! -s "$T/out" ] || fail "$desc: wrote to stdout: $(cat "$T/out")"
	[ ! -e "$T/calls" ] || fail "$desc: the job ran"
	echo "ok: $desc: $(cat "$T/err")"
}
bad "no command"
bad "no command after --" --max-restarts 3 --
bad "--max-restarts without a value" --max-restarts
bad "--max-restarts not a number" --max-restarts x -- "$fake" train --out "$T/run"
bad "--delay negative" --delay -1 -- "$fake" train --out "$T/run"
bad "--delay= not a number" --delay=1.5 -- "$fake" train --out "$T/run"
bad "an unknown option" --retries 3 -- "$fake" train --out "$T/run"
bad "no ferry train" -- echo train --out "$T/run"
bad "ferry without train" -- "$fake" inspect --out "$T/run"
bad "no --out" -- "$fake" train --data x --steps 5
bad "--out without a value" -- "$fake" train --data x --out
bad "a train option it does not know" -- "$fake" train --out "$T/run" --frobnicate 3
bad "a flag given a value" -- "$fake" train --out "$T/run" --verbose=1
"$relaunch" --help >"$T/out" || fail "--help: exit $?"
grep -q "^usage: scripts/train-relaunch.sh" "$T/out" || fail "--help: no usage line"
echo "ok: --help"

# killed after a checkpoint, stopped by a signal (75), done: the first attempt as given, the
# later ones resumed behind the same launcher with only what --resume takes
reset "137 ckpt" 75 0
rc=0
timeout 30 "$relaunch" --delay 0 -- env LAUNCHED_BY=env "$fake" train --data 'd/*.bin' \
	--out "$T/run" --steps 30 --seed=7 --threads 1 --verbose --ckpt-every 10 \
	--stop-at=40 >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" = 0 ] || fail "restarts: exit $rc, want 0: $(cat "$T/err")"
cat >"$T/want" <<EOF
[env] ferry train --data d/*.bin --out $T/run --steps 30 --seed=7 --threads 1 --verbose --ckpt-every 10 --stop-at=40
[env] ferry train --resume $T/run --steps 30 --threads 1 --verbose --stop-at=40
[env] ferry train --resume $T/run --steps 30 --threads 1 --verbose --stop-at=40
EOF
diff "$T/want" "$T/calls" >&2 || fail "restarts: the attempts ran other commands"
grep -q "attempt 1 exited with status 137 .*restart 1 of 10" "$T/err" ||
	fail "restarts: no line for the killed attempt: $(cat "$T/err")"
grep -q "attempt 2 exited with status 75 .*restart 2 of 10" "$T/err" ||
	fail "restarts: exit 75 was not restarted: $(cat "$T/err")"
grep -q "done: attempt 3 exited 0" "$T/err" || fail "restarts: no done line: $(cat "$T/err")"
echo "ok: 137 and 75 resumed with --resume behind the launcher, done on 0"

# no checkpoint yet: a failed attempt is run again as given (a new run); then N restarts and
# one line naming the last status, which is the script's
reset 3 4 5 6
rc=0
timeout 30 "$relaunch" --max-restarts 2 --delay=0 "$fake" train --out "$T/run" --seed 1 \
	>"$T/out" 2>"$T/err" || rc=$?
[ "$rc" = 5 ] || fail "give up: exit $rc, want 5 (the last attempt's)"
[ "$(grep -c . "$T/calls")" = 3 ] || fail "give up: $(grep -c . "$T/calls") attempts, want 3"
[ "$(sort -u "$T/calls")" = "ferry train --out $T/run --seed 1" ] ||
	fail "give up: without a checkpoint every attempt is the new run: $(cat "$T/calls")"
tail -1 "$T/err" | grep -q "giving up after 2 restart(s): attempt 3 exited with status 5" ||
	fail "give up: last line: $(tail -1 "$T/err")"
echo "ok: $(tail -1 "$T/err")"

# a checkpoint there at the start: the first attempt resumes already
reset 0
mkdir -p "$T/run"
touch "$T/run/model_00000020.bin" "$T/run/state_00000020.bin"
"$relaunch" --delay 0 -- "$fake" train --out "$T/run" --seed 1 2>"$T/err" ||
	fail "checkpoint at start: exit $?"
[ "$(cat "$T/calls")" = "ferry train --resume $T/run" ] ||
	fail "checkpoint at start: ran $(cat "$T/calls")"
echo "ok: a directory with a checkpoint is resumed from the first attempt"

# SIGTERM to the script: passed on to the job once, no restart, the job's 75 returned
reset "75 sleep" 0
"$relaunch" --delay 0 -- "$fake" train --out "$T/run" 2>"$T/err" &
bg=$!
for ((i = 0; i < 500; i++)); do
	[ -e "$T/calls" ] && pgrep -P "$(pgrep -P "$bg" | head -1)" sleep >/dev/null && break
	sleep 0.02
done
kill -TERM "$bg"
rc=0
wait "$bg" || rc=$?
[ "$rc" = 75 ] || fail "SIGTERM: exit $rc, want 75: $(cat "$T/err")"
[ "$(cat "$T/signals" 2>/dev/null)" = TERM ] || fail "SIGTERM: the job got: $(cat "$T/signals")"
[ "$(grep -c . "$T/calls")" = 1 ] || fail "SIGTERM: restarted"
echo "ok: $(tail -1 "$T/err")"

# the script parses ferry train's options itself (to know which take a value): it must know
# every one that `ferry train --help` lists, or a run using a new option cannot be relaunched
mapfile -t opts < <("$FERRY" train --help | grep -oE '^ +--[a-z-]+( [^ ]+)?' | grep -v -- --help)
[ "${#opts[@]}" -ge 30 ] || fail "ferry train --help lists ${#opts[@]} options"
for o in "${opts[@]}"; do
	read -r name value <<<"$o"
	reset 0
	args=("$name")
	[ -n "$value" ] && args+=("${value%%|*}")
	"$relaunch" --delay 0 -- "$fake" train --out "$T/run" "${args[@]}" >/dev/null 2>"$T/err" ||
		fail "ferry train $name: the relaunch script refuses it: $(cat "$T/err")"
done
echo "ok: the script knows ferry train's ${#opts[@]} options"
pass "the relaunch script's arguments and restarts"
