#!/usr/bin/env bash
# `ferry fluid-mount` as Fluid's ThinRuntime runs it in the FUSE container: from a config.json
# naming an http source on loopback nginx, it mounts at targetPath (made on the way, as the
# host path may not hold it yet) with allow_other, in the foreground, serving the source's
# bytes; it ends with exit 0 when the mount goes, both ways a container stops: Fluid's preStop
# `umount TARGET`, and SIGTERM from the kubelet. A second start finds the cache warm; a start
# after a SIGKILL (the dead mount still on the path) detaches it and mounts again.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
need_fuse
need_cmd umount
make_tree "$T/src" ds/a.bin:3M ds/sub/b.txt:1000 ds/empty:0
serve_nginx "$T/src"
target=$T/runtime-mnt/thin/default/demo/thin-fuse
echo "$target" >>"$T/.mounts"
cat >"$T/config.json" <<JSON
{"mounts":[{"mountPoint":"http://127.0.0.1:$PORT/ds/","name":"demo","options":{"chunk-size":"1M"}}],"runtimeOptions":{"cache-dir":"$T/cache","unknown-knob":"1"},"targetPath":"$target","accessModes":["ReadOnlyMany"]}
JSON

start() { # runs fluid-mount in the background until the mount is up; sets FM
	"$FERRY" fluid-mount "$T/config.json" 2>"$T/fm.err" &
	FM=$!
	echo "$FM" >>"$T/.pids"
	for _ in $(seq 300); do
		# a live mount: not the dead one a killed fluid-mount left, which fails statfs
		is_mounted "$target" && stat -f "$target" >/dev/null 2>&1 && break
		kill -0 "$FM" 2>/dev/null || { cat "$T/fm.err" >&2; fail "fluid-mount exited before mounting"; }
		sleep 0.1
	done
	is_mounted "$target" && stat -f "$target" >/dev/null 2>&1 ||
		fail "no live mount at $target after 30 s"
	grep -q "unknown option 'unknown-knob' in runtimeOptions, ignored" "$T/fm.err" ||
		fail "the unknown option was not reported: $(cat "$T/fm.err")"
}
stops() { # DESC: fluid-mount exits 0 within 30 s and nothing is left mounted
	local rc=0
	timeout 30 tail --pid="$FM" -f /dev/null || fail "$1: fluid-mount still running after 30 s"
	wait "$FM" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$T/fm.err" >&2; fail "$1: fluid-mount exited $rc"; }
	is_mounted "$target" && fail "$1: still mounted"
	log "ok: $1: fluid-mount exited 0, unmounted"
}

start
awk -v p="$target" '$5 == p' /proc/self/mountinfo | grep -q "fuse.ferry.*allow_other" ||
	fail "not a fuse.ferry mount with allow_other: $(awk -v p="$target" '$5 == p' /proc/self/mountinfo)"
same_tree "$T/src/ds" "$target"
cmp "$T/src/ds/a.bin" "$target/a.bin" || fail "a.bin differs"
log "ok: the mount serves the source's bytes"
umount "$target" # Fluid's default preStop
stops "preStop umount"

start
cmp "$T/src/ds/a.bin" "$target/a.bin" || fail "a.bin differs on the second start"
[ "$(stat_json "$target" misses)" = 0 ] || fail "second start: the cache was cold"
kill -TERM "$FM"
stops "SIGTERM"

# A crashed container (SIGKILL) leaves a dead mount on the host path: the next start detaches
# it and mounts again.
start
kill -KILL "$FM"
wait "$FM" 2>/dev/null || true
out=$(stat -f "$target" 2>&1) && fail "after SIGKILL the mount still answers statfs"
grep -q "not connected" <<<"$out" || fail "after SIGKILL: $out"
start
cmp "$T/src/ds/sub/b.txt" "$target/sub/b.txt" || fail "b.txt differs after the restart"
[ "$(nr_mounts_at "$target")" = 1 ] || fail "$(nr_mounts_at "$target") mounts stacked at $target"
log "ok: restarted over the dead mount of a killed one"
kill -TERM "$FM"
stops "SIGTERM after the restart"
pass "served, warm on the second start, over a dead mount on the third, unmounted by umount and by SIGTERM"
