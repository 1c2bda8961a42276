#!/usr/bin/env bash
# scripts/deploy/image/build.sh makes an OCI archive from this build (containers cannot be
# started here: the runtime's setrlimit is refused, so the image is checked, not run): the
# archive is a valid OCI layout whose blobs match their digests; its config runs `ferry`; its
# layer holds ferry, mount.ferry and fusermount3 (setuid), and every library ferry's
# executables need resolves inside the root (ldd under chroot); `ferry --version`, `ferry mount
# --help` and `ferry fluid-mount --help` run there with chroot. The check fails when a library
# is missing (one is taken away and put back). Both assemblers are checked: buildah, and the
# layout written with tar and sha256sum where buildah cannot run.
# The .deb downloads are kept in $FERRY_BUILD/deploy-cache between runs.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
# --work DIR is a directory build.sh deletes parts of (root, stage, storage): one that holds
# someone's files and no marker of an earlier run is refused in one line, before anything is
# deleted (--work ~ would have removed ~/root). Needs no root: checked first.
mkdir -p "$T/home/root" && echo precious >"$T/home/root/file" && echo mine >"$T/home/notes"
rc=0
"$FERRY_SRC/scripts/deploy/image/build.sh" -o "$T/x.tar" --work "$T/home" >"$T/w.out" 2>"$T/w.err" || rc=$?
[ "$rc" = 1 ] || fail "--work with files: exit $rc, want 1: $(cat "$T/w.err")"
[ "$(grep -c . "$T/w.err")" = 1 ] && grep -q "^build.sh: --work $T/home: not empty and not made by build.sh" "$T/w.err" ||
	fail "--work with files: $(cat "$T/w.err")"
[ -f "$T/home/root/file" ] && [ -f "$T/home/notes" ] || fail "--work with files: build.sh deleted them"
log "ok: --work on a directory with files is refused, nothing deleted"
[ "$(id -u)" -eq 0 ] || skip "debootstrap and chroot need root"
need_cmd debootstrap buildah objdump sha256sum
need_built "$FERRY"
BUILD_SH=$FERRY_SRC/scripts/deploy/image/build.sh
want_version=$("$FERRY" --version)

# in_root ROOT CMD...: CMD under chroot, with /proc (a sanitizer build reads /proc/self)
in_root() {
	local root=$1 rc=0
	shift
	mount -t proc proc "$root/proc" || fail "cannot mount /proc in $root"
	chroot "$root" "$@" || rc=$?
	umount "$root/proc" || fail "cannot unmount $root/proc"
	return $rc
}

# check_root ROOT: every executable ferry installs finds all its libraries inside ROOT
check_root() {
	local root=$1 exe so bad=0 out
	for exe in usr/local/bin/ferry usr/local/sbin/mount.ferry; do
		[ -x "$root/$exe" ] || { echo "no /$exe in the image"; return 1; }
		out=$(chroot "$root" ldd "/$exe" 2>&1) || { echo "ldd /$exe failed: $out"; return 1; }
		if grep -q "not found" <<<"$out"; then
			echo "/$exe: $(grep "not found" <<<"$out" | tr -s ' \t' ' ' | paste -sd,)"
			bad=1
		fi
		# each NEEDED is among what the loader found in the root
		for so in $(objdump -p "$root/$exe" | awk '$1 == "NEEDED" { print $2 }'); do
			grep -q "^[[:space:]]*\(/.*/\)\{0,1\}$so\( \|$\)" <<<"$out" ||
				{ echo "/$exe needs $so, ldd in the root does not list it"; bad=1; }
		done
	done
	return $bad
}

# check_archive TAR NAME: the OCI layout, the config, the layer's contents
check_archive() {
	local tar=$1 name=$2 oci root out
	oci=$T/$name.oci
	root=$T/$name.root
	mkdir -p "$oci" "$root"
	tar -xf "$tar" -C "$oci" || fail "$name: cannot unpack $tar"
	"$PY" - "$oci" "$root" <<'PY' || fail "$name: the OCI layout is wrong (above)"
import hashlib, json, os, subprocess, sys
oci, root = sys.argv[1], sys.argv[2]
def blob(d):
    algo, hexd = d["digest"].split(":")
    assert algo == "sha256", d
    p = os.path.join(oci, "blobs", "sha256", hexd)
    data = open(p, "rb").read()
    assert hashlib.sha256(data).hexdigest() == hexd, "blob %s does not match its digest" % hexd
    assert len(data) == d["size"], "blob %s: size %d, descriptor says %d" % (hexd, len(data), d["size"])
    return p, data
assert json.load(open(os.path.join(oci, "oci-layout")))["imageLayoutVersion"] == "1.0.0"
index = json.load(open(os.path.join(oci, "index.json")))
assert len(index["manifests"]) == 1, index
_, m = blob(index["manifests"][0])
m = json.loads(m)
assert m["schemaVersion"] == 2
_, c = blob(m["config"])
c = json.loads(c)
assert c["os"] == "linux" and c["architecture"] == "amd64", (c["os"], c["architecture"])
assert c["config"]["Entrypoint"] == ["ferry"], c["config"].get("Entrypoint")
assert any(e.startswith("PATH=") and "/usr/local/bin" in e for e in c["config"]["Env"])
assert len(c["rootfs"]["diff_ids"]) == len(m["layers"]) >= 1
for l, diff in zip(m["layers"], c["rootfs"]["diff_ids"]):
    assert l["mediaType"].startswith("application/vnd.oci.image.layer.v1.tar"), l["mediaType"]
    p, data = blob(l)
    raw = data if l["mediaType"].endswith(".tar") else __import__("gzip").decompress(data)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff, "layer diff_id mismatch"
    subprocess.run(["tar", "-xf", p, "-C", root], check=True)
print("layout ok: %d layer(s), entrypoint %s" % (len(m["layers"]), c["config"]["Entrypoint"]))
PY
	[ -u "$root/usr/bin/fusermount3" ] || fail "$name: no setuid /usr/bin/fusermount3 in the layer"
	out=$(check_root "$root") || fail "$name: $out"
	out=$(in_root "$root" ferry --version) || fail "$name: ferry --version in the root failed"
	[ "$out" = "$want_version" ] || fail "$name: ferry --version in the root says '$out'"
	out=$(in_root "$root" ferry mount --help) || fail "$name: ferry mount --help in the root failed"
	grep -q "^usage: ferry mount" <<<"$out" || fail "$name: ferry mount --help in the root: $out"
	out=$(in_root "$root" ferry fluid-mount --help) ||
		fail "$name: ferry fluid-mount --help in the root failed"
	grep -q "^usage: ferry fluid-mount" <<<"$out" ||
		fail "$name: ferry fluid-mount --help in the root: $out"
	log "ok: $name: $(du -sh "$root" | cut -f1) root, $(du -h "$tar" | cut -f1) archive, ldd finds every library"
}

start=$(date +%s)
"$BUILD_SH" -o "$T/image.tar" --build-dir "$FERRY_BUILD" --cache "$FERRY_BUILD/deploy-cache" \
	--work "$T/work" 2>"$T/build.err" || { cat "$T/build.err" >&2; fail "build.sh failed"; }
grep -q "assembled with buildah" "$T/build.err" || fail "buildah was not used: $(cat "$T/build.err")"
t_build=$(($(date +%s) - start))
check_archive "$T/image.tar" buildah

# The check can fail: without libcurl, ldd in the root says so.
lib=$(find "$T/buildah.root/usr/lib" "$T/buildah.root/lib" -name 'libcurl.so.4*' -type f 2>/dev/null | head -n1)
[ -n "$lib" ] || fail "no libcurl.so.4 in the image"
mv "$lib" "$T/held"
find "$T/buildah.root" -name 'libcurl.so.4' -type l -delete
if out=$(check_root "$T/buildah.root"); then
	fail "check_root passed with libcurl taken out"
fi
log "ok: with libcurl taken out: $out"
rm -rf --one-file-system "$T/buildah.root" "$T/buildah.oci"

start=$(date +%s)
FERRY_IMAGE_ASSEMBLER=tar "$BUILD_SH" -o "$T/image-tar.tar" --build-dir "$FERRY_BUILD" \
	--cache "$FERRY_BUILD/deploy-cache" --work "$T/work" 2>"$T/build.err" ||
	{ cat "$T/build.err" >&2; fail "build.sh (tar) failed"; }
grep -q "assembled by hand" "$T/build.err" || fail "the tar path did not run: $(cat "$T/build.err")"
t_tar=$(($(date +%s) - start))
check_archive "$T/image-tar.tar" tar
pass "buildah image in ${t_build}s, tar image in ${t_tar}s (load $(cut -d' ' -f1-3 /proc/loadavg))"
