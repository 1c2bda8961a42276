#!/usr/bin/env bash
# `ferry warm` of large cold files through a slow server (nginx sending each GET at 1 MiB/s
# after its first MiB; 2 MiB chunks, so a chunk takes up to a second and 256 MiB about 8 s):
#  - on a terminal (a pseudo-terminal), the progress line is drawn within a second of the
#    start and redrawn at least every second; Ctrl-C (^C typed on the terminal) ends it
#    within 2 s with exit 130 and one line saying how much was warmed;
#  - SIGTERM, stderr a file: exit 143 within 2 s and one line;
#  - a warm left alone still makes a file wholly resident and says so in one line;
#  - the daemon killed (kill -9) during a warm: it ends within 2 s with one line saying that
#    the daemon is gone and that `ferry umount` clears the mount, which it then does.
. "$(dirname "$0")/lib.sh"
need_fuse
mkdir -p "$T/src"
# Sparse: what they hold does not matter here, only how long they take to come.
for f in int.bin term.bin kill.bin; do
	truncate -s 256M "$T/src/$f"
done
make_tree "$T/src" whole.bin:6M
serve_nginx "$T/src"

log "slowing nginx down to 1 MiB/s a request"
master=$(cat "$NGINX_STATE/nginx.pid")
old_workers=$(pgrep -P "$master" | sort)
sed -i 's|location / { }|location / { limit_rate 1m; }|' "$NGINX_STATE/nginx.conf"
grep -q 'limit_rate 1m' "$NGINX_STATE/nginx.conf" || fail "nginx.sh's config changed: no location to slow"
nginx -p "$NGINX_STATE" -c "$NGINX_STATE/nginx.conf" -g "user root;" -s reload ||
	fail "nginx did not reload"
# The reload is done when none of the old workers is left to answer.
for _ in $(seq 100); do
	[ -z "$(comm -12 <(pgrep -P "$master" | sort) <(echo "$old_workers"))" ] && break
	sleep 0.1
done
[ -z "$(comm -12 <(pgrep -P "$master" | sort) <(echo "$old_workers"))" ] ||
	fail "nginx's old workers are still there after 10 s"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt" --chunk-size 2M --dir-readahead 0

log "on a terminal: progress within a second, then ^C"
timeout 60 "$PY" - "$FERRY" "$T/mnt/int.bin" <<'PY' || fail "ferry warm on a terminal: see above"
import os, pty, re, select, signal, sys, time

ferry, path = sys.argv[1], sys.argv[2]
CTRL_C_AFTER = 2.5
t0 = time.monotonic()
pid, fd = pty.fork()
if pid == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a shell leaves it for a foreground job
    os.execv(ferry, [ferry, "warm", path])
out, draws, sent, status, ended = b"", [], None, None, None
while status is None:
    now = time.monotonic()
    if sent is None and now - t0 >= CTRL_C_AFTER:
        os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground job
        sent = now
    if now - t0 > 40:
        os.kill(pid, signal.SIGKILL)
        sys.exit("still running 40 s after the start")
    r, _, _ = select.select([fd], [], [], 0.02)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        draws += [now - t0] * len(re.findall(rb"\r\[", data))
        out += data
    wpid, st = os.waitpid(pid, os.WNOHANG)
    if wpid:
        status, ended = st, time.monotonic()
try:
    while select.select([fd], [], [], 0.2)[0]:
        data = os.read(fd, 65536)
        if not data:
            break
        out += data
except OSError:
    pass
text = out.decode(errors="replace")
print("draws at %s s" % " ".join("%.2f" % d for d in draws[:12]))
print("output after the last draw: %r" % text[text.rfind("\r["):][-200:])
bad = []
if not draws or draws[0] > 1.0:
    bad.append("first progress line at %s, want within 1 s" %
               ("%.2f s" % draws[0] if draws else "never"))
before = [d for d in draws if d < sent - t0]
gaps = [b - a for a, b in zip([0.0] + before, before + [sent - t0])]
if max(gaps) > 1.0:
    bad.append("%.2f s without a redraw before ^C, want at most 1 s" % max(gaps))
if ended - sent > 2.0:
    bad.append("exit %.2f s after ^C, want within 2 s" % (ended - sent))
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 130:
    bad.append("status %s, want exit 130" %
               ("exit %d" % os.WEXITSTATUS(status) if os.WIFEXITED(status)
                else "killed by signal %d" % os.WTERMSIG(status)))
lines = [l for l in re.split(r"\r\n|\n", text) if l.strip()]
if text.count("\n") != 1 or not re.search(r"stopped by SIGINT: .*warmed", lines[-1] if lines else ""):
    bad.append("want exactly one line, saying how much was warmed, after the bar: %r" % text[-300:])
for b in bad:
    print("FAIL:", b)
print("^C at %.2f s, exit %.2f s later" % (sent - t0, ended - sent))
sys.exit(1 if bad else 0)
PY

log "SIGTERM, stderr a file"
timeout 60 "$FERRY" warm "$T/mnt/term.bin" 2>"$T/term.err" &
pid=$!
sleep 2.5
k=$EPOCHREALTIME
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
e=$EPOCHREALTIME
took=$("$PY" -c "print('%.2f' % ($e - $k))")
log "exit $rc ${took} s after SIGTERM: $(cat "$T/term.err")"
[ "$rc" -ne 124 ] || fail "ferry warm still running after 60 s"
[ "$rc" -eq 143 ] || fail "ferry warm ended with $rc after SIGTERM, want 143"
"$PY" -c "import sys; sys.exit(float(sys.argv[1]) > 2.0)" "$took" ||
	fail "ferry warm took $took s to stop after SIGTERM, want within 2 s"
{ [ "$(grep -c . "$T/term.err")" -eq 1 ] && grep -q "stopped by SIGTERM: .* warmed" "$T/term.err"; } ||
	fail "want one line saying how much was warmed, got: $(cat "$T/term.err")"

log "a warm left alone"
timeout 60 "$FERRY" warm "$T/mnt/whole.bin" 2>"$T/whole.err" || fail "ferry warm whole.bin: $(cat "$T/whole.err")"
[ "$(xattr "$T/mnt/whole.bin" user.ferry.cached)" = $((6 << 20)) ] ||
	fail "whole.bin is not all cached after ferry warm"
[ "$(cat "$T/whole.err")" = "ferry warm: 1 files, 6.0 MiB resident" ] ||
	fail "want one summary line, got: $(cat "$T/whole.err")"
cmp "$T/src/whole.bin" "$T/mnt/whole.bin" || fail "whole.bin reads other bytes than the source's"

log "the daemon killed during a warm"
timeout 60 "$FERRY" warm "$T/mnt/kill.bin" 2>"$T/kill.err" &
pid=$!
sleep 1.5
k=$EPOCHREALTIME
kill -9 "$(ferry_daemon_pid "$T/mnt")"
rc=0
wait "$pid" || rc=$?
took=$("$PY" -c "print('%.2f' % ($EPOCHREALTIME - $k))")
log "exit $rc ${took} s after kill -9: $(cat "$T/kill.err")"
[ "$rc" -eq 1 ] || fail "ferry warm ended with $rc when its daemon died, want 1"
"$PY" -c "import sys; sys.exit(float(sys.argv[1]) > 2.0)" "$took" ||
	fail "ferry warm took $took s to stop after its daemon died, want within 2 s"
{ [ "$(grep -c . "$T/kill.err")" -eq 1 ] && grep -qF "is gone" "$T/kill.err" &&
	grep -qF "\`ferry umount $T/mnt\` clears the mount" "$T/kill.err"; } ||
	fail "want one line saying the daemon is gone and what clears it, got: $(cat "$T/kill.err")"
umount_ferry "$T/mnt"
pass
