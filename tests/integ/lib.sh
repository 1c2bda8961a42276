# shellcheck shell=bash
# Shared harness of the integration tests: sourced by each tests/integ/*.sh. It makes a temp
# dir, starts loopback servers, mounts ferry, and undoes all of it on exit, whatever happens.
#   . "$(dirname "$0")/lib.sh"; need_fuse; make_tree "$T/src" ...; serve_nginx "$T/src"
#   mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"; same_tree "$T/src" "$T/mnt"; pass
# Environment: FERRY_SRC, FERRY_BUILD (set by meson), FERRY (the binary, default
# $FERRY_BUILD/mount/ferry), FERRY_KEEP_TMP=1 keeps the temp dir for a post-mortem.
# Exit status: 0 PASS, 77 SKIP only for what this machine lacks by nature (no /dev/fuse, not
# root, a build configured without a feature); anything missing that the build or
# scripts/deps.sh provides (a binary, a helper program, a python module) FAILS, in one line.
set -euo pipefail

FERRY_SRC=${FERRY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FERRY_BUILD=${FERRY_BUILD:-$FERRY_SRC/build}
FERRY=${FERRY:-$FERRY_BUILD/mount/ferry}
MOUNT_FERRY=${MOUNT_FERRY:-$(dirname "$FERRY")/mount.ferry}
PY=/usr/bin/python3
NGINX_SH=$FERRY_SRC/tests/lib/nginx.sh
TEST_NAME=$(basename "$0" .sh)
export LC_ALL=C.UTF-8

T=$(mktemp -d "${TMPDIR:-/tmp}/ferry-$TEST_NAME.XXXXXX")
T=$(cd "$T" && pwd)
# What cleanup undoes, one per line (files, so that subshells can register too).
: >"$T/.mounts"
: >"$T/.servers"
: >"$T/.pids"
# Commands a test adds with on_exit; cleanup runs them first, newest first.
on_exit_cmds=()
# Sanitizer reports (sanitizer builds) go to files here, so that the detached daemon's, whose
# stderr is /dev/null, are seen too: cleanup prints them and fails the test.
mkdir "$T/.san"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}handle_abort=1:log_path=$T/.san/asan"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}${UBSAN_OPTIONS:+:}log_path=$T/.san/ubsan"
export TSAN_OPTIONS="${TSAN_OPTIONS:-}${TSAN_OPTIONS:+:}log_path=$T/.san/tsan"

log() { echo "--- $TEST_NAME: $*"; }
fail() {
	echo "FAIL: $TEST_NAME: $*" >&2
	exit 1
}
skip() {
	echo "SKIP: $TEST_NAME: $*"
	exit 77
}
pass() {
	echo "PASS: $TEST_NAME${1:+: $1}"
	exit 0
}

is_mounted() { # path: true when something is mounted exactly there
	local p
	p=$(realpath -m "$1")
	awk -v p="$p" '{ gsub(/\\040/, " ", $5); if ($5 == p) f = 1 } END { exit !f }' \
		/proc/self/mountinfo
}

nr_mounts_at() { # path: how many mounts are stacked there
	local p
	p=$(realpath -m "$1")
	awk -v p="$p" '{ gsub(/\\040/, " ", $5); if ($5 == p) n++ } END { print n + 0 }' \
		/proc/self/mountinfo
}

mounts_under() { # dir: mountpoints strictly inside it
	awk -v p="$1/" '{ gsub(/\\040/, " ", $5); if (index($5, p) == 1) print $5 }' \
		/proc/self/mountinfo
}

# on_exit CMD: cleanup runs CMD (a string for eval) before it unmounts and stops servers; CMD
# sees the test's exit status in $rc.
on_exit() {
	on_exit_cmds+=("$1")
}

cleanup() {
	local rc=$? m s p i
	set +e
	for ((i = ${#on_exit_cmds[@]} - 1; i >= 0; i--)); do
		eval "${on_exit_cmds[i]}"
	done
	# Unmount in reverse order of mounting; -z so a busy mount cannot keep us here.
	if [ -s "$T/.mounts" ]; then
		while read -r m; do
			is_mounted "$m" || continue
			fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		done < <(tac "$T/.mounts")
	fi
	# Anything a failed check left mounted inside $T, deepest first.
	while read -r m; do
		fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done < <(mounts_under "$T" | sort -r)
	while read -r s; do
		[ -n "$s" ] && bash "$NGINX_SH" stop "$s" 2>/dev/null
	done <"$T/.servers"
	while read -r p; do
		[ -n "$p" ] && kill "$p" 2>/dev/null
	done <"$T/.pids"
	for s in "$T"/.san/*; do
		[ -s "$s" ] || continue
		echo "--- sanitizer report ($(basename "$s")):" >&2
		cat "$s" >&2
		[ "$rc" -eq 0 ] && rc=1
	done
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for s in $(cat "$T/.servers"); do
			[ -s "$s/error.log" ] && { echo "--- nginx error.log ($s):"; tail -5 "$s/error.log"; }
		done >&2
	fi
	if [ "${FERRY_KEEP_TMP:-0}" = 1 ]; then
		echo "kept $T" >&2
	elif [ -n "$(mounts_under "$T")" ]; then
		# Never delete through a mount: it could reach a source tree.
		echo "$TEST_NAME: still mounted under $T, left in place" >&2
		[ "$rc" -eq 0 ] && rc=1
	else
		rm -rf --one-file-system "$T"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# need_built PATH...: FAIL unless each program of the build is there.
need_built() {
	local p
	for p in "$@"; do
		[ -x "$p" ] || fail "$p is not built (ninja -C $FERRY_BUILD)"
	done
}

# need_cmd NAME...: FAIL unless each helper program is installed (scripts/deps.sh installs them).
need_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || fail "no $c on PATH (scripts/deps.sh installs it)"
	done
}

# need_python MODULE...: FAIL unless $PY imports each (scripts/deps.sh installs them).
need_python() {
	local m
	for m in "$@"; do
		"$PY" -c "import $m" 2>/dev/null || fail "no python module $m for $PY (scripts/deps.sh)"
	done
}

# build_has FEATURE: true when the build was configured with it (HAVE_FEATURE in config.h).
build_has() {
	[ -f "$FERRY_BUILD/config.h" ] || fail "no $FERRY_BUILD/config.h: not a configured build"
	grep -qx "#define HAVE_$1 1" "$FERRY_BUILD/config.h"
}

# SKIP (77) where this machine has no FUSE device; FAIL when ferry or fusermount3 is missing.
need_fuse() {
	[ -c /dev/fuse ] || skip "no /dev/fuse on this machine"
	need_cmd fusermount3
	need_built "$FERRY"
}

# serve_nginx DOCROOT [--tls]: starts a private nginx; sets PORT, NGINX_STATE (and CA with --tls).
nr_servers=0
serve_nginx() {
	local root=$1 tls=${2:-}
	need_cmd nginx
	nr_servers=$((nr_servers + 1))
	NGINX_STATE=$T/nginx.$nr_servers
	mkdir -p "$NGINX_STATE"
	echo "$NGINX_STATE" >>"$T/.servers"
	# NGINX_OWNER: nginx stops even when this script is killed before its cleanup runs.
	PORT=$(NGINX_OWNER=$$ bash "$NGINX_SH" start "$NGINX_STATE" "$root" $tls) ||
		fail "nginx did not start"
	CA=$NGINX_STATE/ca.pem
}

stop_nginx() { # state dir (default: the last one started)
	bash "$NGINX_SH" stop "${1:-$NGINX_STATE}"
}

free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Requests nginx logged so far, one "METHOD URI STATUS" a line.
nginx_requests() { # state dir (default: the last one started)
	awk '{ m = $6; gsub(/"/, "", m); print m, $7, $9 }' "${1:-$NGINX_STATE}/access.log"
}

# mount_ferry SOURCE MOUNTPOINT [options...]: mounts with cache dir $T/cache unless the
# options name one, and fails the test unless the mount is live when ferry returns.
mount_ferry() {
	local src=$1 mnt=$2
	shift 2
	local cache=()
	case " $* " in *" --cache-dir "*) ;; *) cache=(--cache-dir "$T/cache") ;; esac
	mkdir -p "$mnt"
	echo "$(realpath -m "$mnt")" >>"$T/.mounts"
	local err=$T/.mount.err
	if ! timeout 60 "$FERRY" mount "${cache[@]}" "$@" "$src" "$mnt" 2>"$err"; then
		cat "$err" >&2
		fail "ferry mount $src $mnt failed"
	fi
	[ -s "$err" ] && sed 's/^/ferry mount: /' "$err" >&2
	is_mounted "$mnt" || fail "ferry mount returned 0 but nothing is mounted at $mnt"
	return 0
}

umount_ferry() { # mountpoint
	timeout 30 "$FERRY" umount "$1" || fail "ferry umount $1 failed"
	! is_mounted "$1" || fail "$1 is still mounted after ferry umount"
}

# fstab_leg FSTAB MOUNTPOINT SRCDIR REL [CMD...]: mount(8) mounts the ferry line of the fstab
# file (CMD..., e.g. env settings, runs it), the file REL reads as SRCDIR/REL, umount(8)
# unmounts. mount(8) runs /sbin/mount.ferry: where this build's is not the one installed, a
# private mount namespace lays it over /usr/sbin (overlayfs, read-only) for the leg.
fstab_leg() {
	local fstab=$1 mnt=$2 want=$3 rel=$4
	shift 4
	cat >"$T/.fstab_leg.sh" <<'LEG'
fstab=$1 mnt=$2 want=$3 rel=$4
shift 4
trap 'mountpoint -q "$mnt" && umount "$mnt"' EXIT
"$@" mount -T "$fstab" "$mnt" || { echo "mount -T $fstab failed"; exit 1; }
cmp "$want/$rel" "$mnt/$rel" || exit 1
umount "$mnt" || { echo "umount $mnt failed"; exit 1; }
LEG
	if [ -x /sbin/mount.ferry ] && cmp -s /sbin/mount.ferry "$MOUNT_FERRY"; then
		log "through mount(8) and an fstab file"
		bash "$T/.fstab_leg.sh" "$fstab" "$mnt" "$want" "$rel" "$@" || fail "mount(8) leg"
		return 0
	fi
	if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
		log "mount(8) leg not run: /sbin/mount.ferry is not this build's, and this is not root"
		return 0
	fi
	mkdir -p "$T/.sbin"
	cp "$MOUNT_FERRY" "$T/.sbin/mount.ferry"
	# shellcheck disable=SC2016
	local lay='mount -t overlay overlay -o lowerdir="$1":/usr/sbin /usr/sbin && shift && "$@"'
	if ! unshare -m --propagation private bash -c "$lay" _ "$T/.sbin" true 2>/dev/null; then
		log "mount(8) leg not run: no private mount namespace with overlayfs here"
		return 0
	fi
	log "through mount(8) and an fstab file (this build's mount.ferry laid over /usr/sbin)"
	unshare -m --propagation private bash -c "$lay" _ "$T/.sbin" \
		bash "$T/.fstab_leg.sh" "$fstab" "$mnt" "$want" "$rel" "$@" || fail "mount(8) leg"
}

# stat_json MOUNTPOINT FIELD...: prints the first field present in `ferry stat --json`.
stat_json() {
	local mnt=$1
	shift
	timeout 30 "$FERRY" stat "$mnt" --json >"$T/.stat.json" || fail "ferry stat --json $mnt failed"
	"$PY" - "$T/.stat.json" "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def find(d, k):
    if isinstance(d, dict):
        if k in d:
            return d[k]
        for v in d.values():
            r = find(v, k)
            if r is not None:
                return r
    return None
for k in sys.argv[2:]:
    v = find(d, k)
    if v is not None:
        print(v)
        sys.exit(0)
sys.exit("ferry stat --json has none of: " + " ".join(sys.argv[2:]))
PY
}

# Bytes the cache really holds on disk (allocated blocks, so holes in sparse files count 0).
disk_used_bytes() { # dir
	"$PY" - "$1" <<'PY'
import os, sys
n = 0
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        try:
            n += os.lstat(os.path.join(d, f)).st_blocks * 512
        except FileNotFoundError:
            pass
print(n)
PY
}

# make_tree DIR SPEC...: writes files of seeded random bytes; SPEC is PATH:SIZE (size with
# K/M/G suffix; a trailing / in PATH makes an empty directory). The same spec gives the
# same bytes, so a test can be rerun against a failure.
make_tree() {
	local dir=$1
	shift
	"$PY" - "$dir" "$@" <<'PY'
import os, random, sys
root = sys.argv[1]
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
for spec in sys.argv[2:]:
    path, _, size = spec.rpartition(":") if not spec.endswith("/") else (spec, "", "")
    full = os.path.join(root, path)
    if path.endswith("/"):
        os.makedirs(full, exist_ok=True)
        continue
    os.makedirs(os.path.dirname(full) or root, exist_ok=True)
    n = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
    rng = random.Random(spec)
    with open(full, "wb") as f:
        left = n
        while left:
            k = min(left, 1 << 20)
            f.write(rng.randbytes(k))
            left -= k
PY
}

# many_files DIR COUNT MAXSIZE: COUNT files f00000.. of 0..MAXSIZE seeded random bytes.
many_files() {
	"$PY" - "$@" <<'PY'
import os, random, sys
root, count, maxsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
rng = random.Random(count * 7919 + maxsize)
for i in range(count):
    with open(os.path.join(root, "f%05d" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(0, maxsize)))
PY
}

# same_tree SRC MNT [--no-data]: names, types, sizes, symlink targets and sha256 of every
# file under MNT equal those under SRC (the manifest file itself is left out on both sides).
same_tree() {
	"$PY" - "$@" <<'PY'
import hashlib, os, stat, sys
src, mnt = sys.argv[1], sys.argv[2]
data = "--no-data" not in sys.argv[3:]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if rel == ".ferry-manifest":
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d",)
            else:
                h = None
                if data:
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        while b := f.read(1 << 20):
                            h.update(b)
                    h = h.hexdigest()
                out[rel] = ("f", st.st_size, h)
    return out
a, b = walk(src), walk(mnt)
bad = []
for k in sorted(set(a) | set(b)):
    if k not in b:
        bad.append("missing in mount: %r" % k)
    elif k not in a:
        bad.append("not in source: %r" % k)
    elif a[k] != b[k]:
        bad.append("differs: %r source %r mount %r" % (k, a[k], b[k]))
for line in bad[:20]:
    print(line, file=sys.stderr)
if bad:
    sys.exit("%d of %d entries differ" % (len(bad), len(a)))
print("%d entries equal" % len(a))
PY
}

# expect_clean_failure DESC MOUNTPOINT CMD...: CMD exits non-zero (not by timeout) with
# exactly one line on stderr and leaves nothing mounted at MOUNTPOINT.
expect_clean_failure() {
	local desc=$1 mnt=$2 rc=0 nr_before
	shift 2
	nr_before=$(nr_mounts_at "$mnt")
	timeout 60 "$@" >"$T/.out" 2>"$T/.err" </dev/null || rc=$?
	[ "$rc" -ne 0 ] || fail "$desc: exit 0, want failure"
	[ "$rc" -ne 124 ] || fail "$desc: still running after 60 s"
	[ "$rc" -ne 126 ] && [ "$rc" -ne 127 ] || fail "$desc: could not run $1"
	[ "$rc" -lt 128 ] || fail "$desc: killed by signal $((rc - 128))"
	local nr_lines
	nr_lines=$(grep -c . "$T/.err" || true)
	if [ "$nr_lines" -ne 1 ]; then
		sed 's/^/  stderr: /' "$T/.err" >&2
		fail "$desc: $nr_lines lines on stderr, want one"
	fi
	[ "$(nr_mounts_at "$mnt")" -eq "$nr_before" ] || fail "$desc: left a mount at $mnt"
	echo "ok: $desc -> rc $rc: $(cat "$T/.err")"
}

# make_dataset DIR: a small tree whose sizes sit on and beside the chunk boundaries
# (1 MiB and 8 MiB chunks), with nested and empty directories (about 40 MiB).
make_dataset() {
	make_tree "$1" empty.bin:0 one.bin:1 page-1.bin:4095 page.bin:4096 \
		mib-1.bin:1048575 mib+1.bin:1048577 a/chunk.bin:8M a/chunk+1.bin:8388609 \
		a/b/c/deep.bin:300K a/b/twenty.bin:20M emptydir/ a/b/empty-too/
}

xattr() { # path name: prints the attribute's value
	"$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], sys.argv[2]).decode())' "$1" "$2"
}

# --- Cache damage, full volume, kill -9 (the tests-cache helpers) ---
# These locate cache files by content and by suffix, never by computing their names, so that
# they hold across cache formats: a data file is any *.data under the cache dir.

drop_caches() { # so that the next read reaches the daemon, not the kernel's page cache
	sync
	echo 3 >/proc/sys/vm/drop_caches || fail "cannot drop the page cache (not root?)"
}

# cache_data_file_of SRCFILE CACHEDIR: prints the data file under CACHEDIR that holds cached
# bytes of SRCFILE (some non-zero 4 KiB at a 64 KiB-aligned offset equal to the source's);
# fails the test when none does.
cache_data_file_of() {
	"$PY" - "$1" "$2" <<'PY' || fail "no data file under $2 holds bytes of $1"
import os, sys
src, cache = sys.argv[1], sys.argv[2]
ref = open(src, "rb").read()
for d, _, fs in os.walk(cache):
    for n in sorted(fs):
        if not n.endswith(".data"):
            continue
        p = os.path.join(d, n)
        with open(p, "rb") as f:
            for off in range(0, len(ref), 64 << 10):
                want = ref[off:off + 4096]
                if not want.strip(b"\0"):
                    continue
                f.seek(off)
                if f.read(len(want)) == want:
                    print(p)
                    sys.exit(0)
sys.exit(1)
PY
}

# flip_byte FILE OFFSET: inverts one byte of FILE in place (and makes it durable).
flip_byte() {
	"$PY" - "$1" "$2" <<'PY' || fail "cannot flip byte $2 of $1"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = int(sys.argv[2])
b = os.pread(fd, 1, off)
assert len(b) == 1, "offset beyond the end"
os.pwrite(fd, bytes([b[0] ^ 0xff]), off)
os.fsync(fd)
os.close(fd)
PY
}

# reads_right_or_eio SRCDIR MNTDIR [--strict] NAME...: reads each NAME through the mount in
# 1 MiB preads (a fresh open per file, within 60 s); every read returns the source's bytes or
# fails with EIO (with --strict: the source's bytes, no EIO). Any other byte, short read or
# errno fails the test (after all files are read: the first bad read of each is printed).
# Prints "N reads right, M EIO".
reads_right_or_eio() {
	local src=$1 mnt=$2
	shift 2
	timeout 60 "$PY" - "$src" "$mnt" "$@" <<'PY' || fail "reads through $mnt: see above"
import errno, os, sys
src, mnt, args = sys.argv[1], sys.argv[2], sys.argv[3:]
strict = "--strict" in args
names = [a for a in args if a != "--strict"]
nr_ok = nr_eio = 0
bad = []
for name in names:
    ref = open(os.path.join(src, name), "rb").read()
    try:
        fd = os.open(os.path.join(mnt, name), os.O_RDONLY)
    except OSError as e:
        bad.append("%s: open: %s" % (name, e))
        continue
    try:
        for off in range(0, max(len(ref), 1), 1 << 20):
            want = ref[off:off + (1 << 20)]
            try:
                got = os.pread(fd, 1 << 20, off)
            except OSError as e:
                if e.errno != errno.EIO or strict:
                    bad.append("%s at %d: %s, want %s" % (name, off, e,
                               "the source's bytes" if strict else "the source's bytes or EIO"))
                    break
                nr_eio += 1
                continue
            if got != want:
                i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
                bad.append("%s at %d: WRONG BYTES: %d bytes returned, want %d, first difference "
                           "at byte %d of the object" % (name, off, len(got), len(want), off + i))
                break
            nr_ok += 1
    finally:
        os.close(fd)
for b in bad:
    print(b, file=sys.stderr)
if bad:
    sys.exit("%d of %d files failed the check" % (len(bad), len(names)))
print("%d reads right, %d EIO" % (nr_ok, nr_eio))
PY
}

# ferry_daemon_pid MOUNTPOINT: prints the pid of the ferry daemon serving MOUNTPOINT.
ferry_daemon_pid() {
	local mnt p exe
	mnt=$(realpath -m "$1")
	exe=$(realpath "$FERRY")
	# the daemon has the mountpoint itself among its arguments; `ferry warm MNT/FILE` and
	# `ferry stat MNT` run the same executable and match the pattern too
	for p in $(pgrep -f -- "$mnt" || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] || continue
		tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qx -- "mount" || continue
		tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | while IFS= read -r a; do
			[ "$(realpath -m -- "$a")" = "$mnt" ] && echo yes && break
		done | grep -q yes || continue
		echo "$p"
		return 0
	done
	fail "no ferry daemon serves $mnt"
}

# cache_temp_files DIR: files a writer left behind half-done (temporary names), one a line.
cache_temp_files() {
	find "$1" -type f \( -name '*.tmp' -o -name '*.tmp.*' -o -name '*.tmp[0-9]*' \
		-o -regex '.*/meta\.[0-9]+' -o -name '.#*' -o -name '*~' \) 2>/dev/null || true
}

# timed_same_tree SECS SRC MNT [--no-data]: same_tree, failing the test after SECS seconds
# (a read through a mount that hangs must not hang the test).
timed_same_tree() {
	local secs=$1
	shift
	timeout "$secs" bash -c "$(declare -f same_tree); PY=$PY; same_tree \"\$@\"" _ "$@" ||
		fail "same_tree $*: differs, or still running after $secs s"
}

# ---- the fault server (tests/lib/faultserver.py; its docstring lists the modes) ----
FAULTSERVER=$FERRY_SRC/tests/lib/faultserver.py

# start_faultserver DOCROOT [OPTIONS...]: a faultserver on a free loopback port, stopped on
# exit; sets FPORT, FAULT_PID and FAULT_URL (http://127.0.0.1:FPORT). Another call starts
# another one (the variables name the newest).
nr_faultservers=0
start_faultserver() {
	local root=$1 port_file log
	shift
	[ -f "$FAULTSERVER" ] || fail "no $FAULTSERVER"
	nr_faultservers=$((nr_faultservers + 1))
	port_file=$T/.faultserver.$nr_faultservers.port
	log=$T/faultserver.$nr_faultservers.log
	"$PY" "$FAULTSERVER" "$root" --port-file "$port_file" "$@" >"$log" 2>&1 &
	FAULT_PID=$!
	echo "$FAULT_PID" >>"$T/.pids"
	for _ in $(seq 200); do
		[ -s "$port_file" ] && break
		kill -0 "$FAULT_PID" 2>/dev/null || { cat "$log" >&2; fail "faultserver did not start"; }
		sleep 0.05
	done
	[ -s "$port_file" ] || fail "faultserver wrote no port"
	FPORT=$(cat "$port_file")
	FAULT_URL=http://127.0.0.1:$FPORT
}

# fault_set QUERY [URL]: changes a running faultserver, e.g. fault_set "mode=ok"; resets its
# counts.
fault_set() {
	curl -sf -o /dev/null "${2:-$FAULT_URL}/_fault?$1" || fail "faultserver refused _fault?$1"
}

# fault_count [URL]: file GETs the faultserver saw since start or the last fault_set.
fault_count() {
	curl -sf "${1:-$FAULT_URL}/_fault/count" || fail "no count from the faultserver"
}

# fault_count_faulted [URL]: how many of them it faulted.
fault_count_faulted() {
	curl -sf "${1:-$FAULT_URL}/_fault/faults" || fail "no fault count from the faultserver"
}

# fault_gets [URL]: the file GETs the faultserver saw since start or the last fault_set, one
# "PATH START-END MODE" a line.
fault_gets() {
	curl -sf "${1:-$FAULT_URL}/_fault/gets" || fail "no GET list from the faultserver"
}

# check_reads SRC MNT [OPTIONS] NAME...: reads the files NAME (relative to both) through the
# mount and compares every byte returned with SRC's; a read either returns the source's bytes
# or fails with one of the allowed errnos, never other bytes. A read is what a careful program
# does: pread until the count or an error (the kernel may answer part from its page cache).
#   --seq SIZE      read each file whole, SIZE bytes at a time (default 1M)
#   --random N      then N preads at random offsets and lengths (up to 3 MiB), seeded
#   --seed S        the seed of those (default 1)
#   --threads K     the random preads from K threads at once (default 1)
#   --allow E,..    errnos a read may fail with (default EIO)
#   --all-ok        every read must succeed
# Prints "N reads: R right, F failed (errno counts)"; exits 1 on any wrong byte or other errno,
# and 124 when it ran over CHECK_TIMEOUT seconds (default 60: a hang is a failure).
check_reads() {
	local rc=0
	cat >"$T/.check_reads.py" <<'PY'
import errno, os, random, sys, threading
args = sys.argv[1:]
src, mnt = args[0], args[1]
seq, nr_random, seed, threads, allow, all_ok, names = 1 << 20, 0, 1, 1, {"EIO"}, False, []
i = 2
while i < len(args):
    a = args[i]
    if a == "--seq":
        m = {"K": 1 << 10, "M": 1 << 20}
        v = args[i + 1]
        seq = int(v[:-1]) * m[v[-1]] if v[-1] in m else int(v); i += 2
    elif a == "--random":
        nr_random = int(args[i + 1]); i += 2
    elif a == "--seed":
        seed = int(args[i + 1]); i += 2
    elif a == "--threads":
        threads = int(args[i + 1]); i += 2
    elif a == "--allow":
        allow = set(args[i + 1].split(",")); i += 2
    elif a == "--all-ok":
        all_ok = True; i += 1
    else:
        names.append(a); i += 1
ref = {n: open(os.path.join(src, n), "rb").read() for n in names}
lock = threading.Lock()
counts = {"right": 0}
bad = []

def one(name, fd, off, n):
    want = ref[name][off:off + n]
    got, err = b"", None
    while len(got) < len(want):
        try:
            piece = os.pread(fd, len(want) - len(got), off + len(got))
        except OSError as e:
            err = e
            break
        if not piece:
            break
        got += piece
    with lock:
        if got != want[:len(got)]:
            first = next(k for k in range(len(got)) if got[k] != want[k])
            bad.append("%s %d+%d: WRONG BYTES (%d returned, first wrong at +%d)" %
                       (name, off, n, len(got), first))
        elif err is not None:
            en = errno.errorcode.get(err.errno, str(err.errno))
            if en not in allow or all_ok:
                bad.append("%s %d+%d: %s, want %s" % (name, off, n, err,
                           "success" if all_ok else "/".join(sorted(allow))))
            else:
                counts[en] = counts.get(en, 0) + 1
        elif len(got) < len(want):
            bad.append("%s %d+%d: end of file after %d bytes" % (name, off, n, len(got)))
        else:
            counts["right"] += 1

fds = {n: os.open(os.path.join(mnt, n), os.O_RDONLY) for n in names}
for n in names:
    for off in range(0, max(len(ref[n]), 1), seq):
        one(n, fds[n], off, seq)
rng = random.Random(seed)
work = []
for _ in range(nr_random):
    n = rng.choice(names)
    size = len(ref[n])
    off = rng.randrange(size) if size else 0
    work.append((n, off, rng.randint(1, min(3 << 20, max(1, size - off)))))
def worker(k):
    for w in work[k::threads]:
        one(w[0], fds[w[0]], w[1], w[2])
ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for fd in fds.values():
    os.close(fd)
total = sum(counts.values()) + len(bad)
failed = ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()) if k != "right")
print("%d reads: %d right, %s%s" % (total, counts["right"], failed or "none failed",
      ", %d BAD" % len(bad) if bad else ""), flush=True)
for b in bad[:20]:
    print("BAD", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
	timeout -k 5 "${CHECK_TIMEOUT:-60}" "$PY" "$T/.check_reads.py" "$@" || rc=$?
	[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] ||
		echo "check_reads: still reading after ${CHECK_TIMEOUT:-60} s (a hang), killed" >&2
	return "$rc"
}
