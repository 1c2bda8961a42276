# shellcheck shell=bash
# Shared harness of the integration tests: sourced by each tests/integ/*.sh. It makes a temp
# dir, starts loopback servers, mounts ferry, and undoes all of it on exit, whatever happens.
#   . "$(dirname "$0")/lib.sh"; need_fuse; make_tree "$T/src" ...; serve_nginx "$T/src"
#   mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"; same_tree "$T/src" "$T/mnt"; pass
# Environment: FERRY_SRC, FERRY_BUILD (set by meson), FERRY (the binary, default
# $FERRY_BUILD/mount/ferry), FERRY_KEEP_TMP=1 keeps the temp dir for a post-mortem.
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

cleanup() {
	local rc=$? m s p
	set +e
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

# SKIP (77) where this machine cannot run FUSE; FAIL when ferry itself was not built.
need_fuse() {
	[ -c /dev/fuse ] || skip "no /dev/fuse"
	command -v fusermount3 >/dev/null || skip "no fusermount3"
	[ -x "$FERRY" ] || fail "ferry is not built at $FERRY"
}

need_python_numpy() {
	"$PY" -c 'import numpy' 2>/dev/null || skip "no numpy for $PY"
}

# serve_nginx DOCROOT [--tls]: starts a private nginx; sets PORT, NGINX_STATE (and CA with --tls).
nr_servers=0
serve_nginx() {
	local root=$1 tls=${2:-}
	nr_servers=$((nr_servers + 1))
	NGINX_STATE=$T/nginx.$nr_servers
	mkdir -p "$NGINX_STATE"
	echo "$NGINX_STATE" >>"$T/.servers"
	PORT=$(bash "$NGINX_SH" start "$NGINX_STATE" "$root" $tls) || fail "nginx did not start"
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
