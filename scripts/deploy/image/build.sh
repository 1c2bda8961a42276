#!/usr/bin/env bash
# Builds an OCI image of ferry without any registry: a minimal Debian 12 root from debootstrap
# (minbase), ferry installed from a meson build of this tree, the Debian packages its binaries
# link against (found from their NEEDED entries, so the list cannot go stale) and fuse3 (for
# fusermount3), assembled and committed by buildah into an OCI archive. docs/kubernetes.md.
#
#   scripts/deploy/image/build.sh [-o OUT.tar] [--build-dir DIR] [--work DIR]
#                                 [--cache DIR] [--tag NAME:TAG] [--keep-root]
#
#   -o OUT.tar        the archive (oci-archive), default ./ferry-image.tar
#   --build-dir DIR   a configured meson build of this tree to install from (it is brought up
#                     to date); default: a fresh release build in WORK/build, without
#                     CUDA and MPI
#   --work DIR        scratch space (the root, buildah's storage), default a temp dir, removed;
#                     a new or empty directory, or one an earlier run marked (.ferry-image-work)
#   --cache DIR       debootstrap's .deb cache, kept between runs (default WORK/debs)
#   --tag NAME:TAG    the image name recorded in the archive, default ferry:VERSION
#   --keep-root       leave WORK/root (the image's file tree) for inspection
# Environment: FERRY_IMAGE_MIRROR overrides the Debian mirror (default: the one this machine's
# apt sources name); FERRY_IMAGE_SUITE (default bookworm).
# Needs root (debootstrap, chroot), debootstrap, buildah, dpkg, objdump (binutils).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
out=$PWD/ferry-image.tar
build_dir=
work=
cache=
tag=
keep_root=0
suite=${FERRY_IMAGE_SUITE:-bookworm}

die() {
	echo "build.sh: $*" >&2
	exit 1
}
say() { echo "build.sh: $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$(realpath -m "${2:?-o needs a file}"); shift 2 ;;
	--build-dir) build_dir=$(realpath "${2:?--build-dir needs a directory}"); shift 2 ;;
	--work) work=$(realpath -m "${2:?--work needs a directory}"); shift 2 ;;
	--cache) cache=$(realpath -m "${2:?--cache needs a directory}"); shift 2 ;;
	--tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
	--keep-root) keep_root=1; shift ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
done

# WORK/root, WORK/stage and WORK/storage are deleted, at the start and at exit: only in a
# directory this script made or marked, never in one the user has files in (--work ~).
marker=.ferry-image-work
if [ -n "$work" ] && [ -e "$work" ]; then
	[ -d "$work" ] || die "--work $work: not a directory"
	[ -e "$work/$marker" ] || [ -z "$(ls -A "$work")" ] ||
		die "--work $work: not empty and not made by build.sh (no $marker in it); give a new or empty directory"
fi
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and chroot)"
for c in debootstrap buildah dpkg objdump meson; do
	command -v "$c" >/dev/null || die "$c is not installed (scripts/deps.sh installs it)"
done

# The mirror this machine's apt already uses: the first deb822 stanza or one-line entry that
# carries $suite itself (not -updates or -security).
mirror() {
	local f
	[ -n "${FERRY_IMAGE_MIRROR:-}" ] && { echo "$FERRY_IMAGE_MIRROR"; return; }
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		awk -v s="$suite" '
			/^[[:space:]]*$/ { if (uri != "" && ok && deb) { print uri; exit } uri = ""; ok = 0; deb = 0; next }
			/^URIs:/ { uri = $2 }
			/^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
			END { if (uri != "" && ok && deb) print uri }' "$f" | head -n1
	done | head -n1 | grep . && return
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' | grep . && return
	die "no apt source for $suite in /etc/apt (set FERRY_IMAGE_MIRROR)"
}

cleanup() {
	local rc=$?
	set +e
	mountpoint -q "${root:-/nonexistent}/proc" && umount -l "$root/proc"
	[ -n "${ctr:-}" ] && buildah "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1
	if [ -z "${work_ok:-}" ]; then
		: # the work dir was not checked or made yet: nothing of ours is in it
	elif [ -n "${own_work:-}" ]; then
		rm -rf --one-file-system "$work"
	else
		[ -d "${work:-}/storage" ] && rm -rf --one-file-system "$work/storage" "$work/run"
		[ "$keep_root" = 1 ] ||
			rm -rf --one-file-system "${work:-/nonexistent}/root" "${work:-/nonexistent}/stage"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "$work" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-image.XXXXXX")
	[ "$keep_root" = 1 ] || own_work=1
fi
mkdir -p "$work"
touch "$work/$marker" || die "--work $work: cannot write in it"
work_ok=1
cache=${cache:-$work/debs}
mkdir -p "$cache"
root=$work/root
stage=$work/stage
rm -rf --one-file-system "$root" "$stage"

# 1. ferry, installed into a staging tree from a build of this tree.
if [ -z "$build_dir" ]; then
	build_dir=$work/build
	[ -f "$build_dir/build.ninja" ] ||
		# a FUSE runtime: no trainer on GPUs or over MPI (Open MPI is 60 MB of libraries)
		meson setup "$build_dir" "$SRC" --buildtype=release -Dcuda=disabled -Dmpi=disabled \
			-Dtests=false >/dev/null || die "meson setup failed"
fi
say "building and installing from $build_dir"
ninja -C "$build_dir" -j"${NINJA_JOBS:-2}" >/dev/null || die "the build of ferry failed"
meson install -C "$build_dir" --destdir "$stage" --no-rebuild --quiet >/dev/null ||
	die "meson install failed"
ferry_rel=$(cd "$stage" && find . -path '*/bin/ferry' -type f | head -n1)
[ -n "$ferry_rel" ] || die "meson install put no bin/ferry in $stage"
ferry_rel=${ferry_rel#.}
version=$("$stage$ferry_rel" --version | awk '{ print $2 }')
tag=${tag:-ferry:$version}

# 2. The packages that hold the libraries ferry's executables need, as this machine resolves
# them (the image is the same Debian release): NEEDED -> path (ldd) -> package (dpkg -S).
pkg_of() { # library path -> Debian package, trying the usrmerge twins of the path
	local p=$1 q
	for q in "$p" "$(realpath "$p")" "/usr$p" "${p#/usr}"; do
		dpkg -S "$q" 2>/dev/null | head -n1 | cut -d: -f1 && return 0
	done
	return 1
}
pkgs=(fuse3)
while IFS= read -r exe; do
	objdump -p "$exe" >/dev/null 2>&1 || continue # scripts and data
	resolved=$(ldd "$exe") || die "ldd ${exe#"$stage"} failed"
	# a build with CUDA installs ferry-cuda, the GPU trainer: its libraries are NVIDIA's (the
	# container toolkit mounts the driver's), not Debian's, and a FUSE runtime has no use for it
	if grep -q '=> /usr/local/cuda' <<<"$resolved"; then
		say "leaving out ${exe#"$stage"}: it needs CUDA's libraries (not in Debian)"
		rm -f "$exe"
		continue
	fi
	for so in $(objdump -p "$exe" | awk '$1 == "NEEDED" { print $2 }'); do
		# "libx.so.1 => /path (addr)", or "/lib64/ld-linux-x86-64.so.2 (addr)" for the loader
		path=$(awk -v so="$so" '($1 == so && $2 == "=>") { print $3; exit }
			substr($1, length($1) - length(so)) == "/" so { print $1; exit }' <<<"$resolved")
		[ -n "$path" ] && [ -e "$path" ] ||
			die "${exe#"$stage"} needs $so, which this machine cannot find"
		p=$(pkg_of "$path") ||
			die "$so ($path), needed by ${exe#"$stage"}, is in no Debian package"
		pkgs+=("$p")
	done
done < <(find "$stage" -type f -perm -u+x)
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
say "runtime packages: ${pkgs[*]}"

# 3. The root: minbase plus those packages (debootstrap resolves their dependencies).
m=$(mirror)
say "debootstrap $suite from $m (cache $cache)"
include=$(IFS=,; echo "${pkgs[*]}")
if ! debootstrap --variant=minbase --include="$include" --cache-dir="$cache" \
	"$suite" "$root" "$m" >"$work/debootstrap.log" 2>&1; then
	tail -n 5 "$work/debootstrap.log" >&2
	die "debootstrap failed (log above)"
fi
cp -a "$stage/." "$root/"
chroot "$root" ldconfig
# Nothing a FUSE client needs at run time: package lists, docs, man pages, locales.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
	"$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
	"$root"/var/log/*.log "$root"/var/cache/debconf/*-old "$root"/debootstrap
# The container's FUSE mounts need /dev/fuse from the runtime (privileged or a device plugin);
# fusermount3 reads this file for allow_other by non-root users.
echo user_allow_other >>"$root/etc/fuse.conf"
# /proc for the run: a sanitizer build (the test suite's) reads /proc/self at start and exit
mount -t proc proc "$root/proc" || die "cannot mount /proc in the root"
# under set -e a bare failing command would exit here with no word and /proc still mounted
if ! chroot "$root" "$ferry_rel" --version >/dev/null; then
	umount "$root/proc"
	die "ferry does not run inside the root"
fi
umount "$root/proc" || die "cannot unmount $root/proc"

# 4. Assemble and commit with buildah; vfs storage and chroot isolation need neither overlay
# nor user namespaces. Where buildah fails, write the OCI layout by hand.
BUILDAH=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")
export BUILDAH_ISOLATION=chroot
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rm -f "$out"
assemble_buildah() {
	ctr=$(buildah "${BUILDAH[@]}" from --name "ferry-image-$$" scratch) || return 1
	buildah "${BUILDAH[@]}" copy "$ctr" "$root" / >/dev/null || return 1
	buildah "${BUILDAH[@]}" config --entrypoint '["ferry"]' --cmd '["--help"]' \
		--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--workingdir / --label org.opencontainers.image.title=ferry \
		--label org.opencontainers.image.version="$version" \
		--label org.opencontainers.image.description="ferry: remote datasets as local read-only directories" \
		--created-by "scripts/deploy/image/build.sh" "$ctr" || return 1
	buildah "${BUILDAH[@]}" commit --quiet --format oci --rm "$ctr" "oci-archive:$out:$tag" \
		>/dev/null || return 1
	ctr=
}
assemble_by_hand() { # the OCI image layout: oci-layout, index.json, blobs/sha256/
	local d=$work/oci layer diff lsize cfg csize man msize
	rm -rf "$d"
	mkdir -p "$d/blobs/sha256"
	tar -C "$root" --numeric-owner --sort=name -cf "$d/layer.tar" . || return 1
	diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	gzip -n -6 "$d/layer.tar"
	layer=$(sha256sum "$d/layer.tar.gz" | cut -d' ' -f1)
	lsize=$(stat -c %s "$d/layer.tar.gz")
	mv "$d/layer.tar.gz" "$d/blobs/sha256/$layer"
	printf '{"created":"%s","architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["ferry"],"Cmd":["--help"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"ferry","org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"scripts/deploy/image/build.sh"}]}' \
		"$created" "$version" "$diff" "$created" >"$d/config.json"
	cfg=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	csize=$(stat -c %s "$d/config.json")
	mv "$d/config.json" "$d/blobs/sha256/$cfg"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
		"$cfg" "$csize" "$layer" "$lsize" >"$d/manifest.json"
	man=$(sha256sum "$d/manifest.json" | cut -d' ' -f1)
	msize=$(stat -c %s "$d/manifest.json")
	mv "$d/manifest.json" "$d/blobs/sha256/$man"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
		"$man" "$msize" "${tag##*:}" >"$d/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
	tar -C "$d" --numeric-owner -cf "$out" oci-layout index.json blobs || return 1
	rm -rf "$d"
}
if [ "${FERRY_IMAGE_ASSEMBLER:-buildah}" = buildah ] && assemble_buildah; then
	say "assembled with buildah"
else
	[ "${FERRY_IMAGE_ASSEMBLER:-buildah}" = buildah ] && say "buildah failed; writing the OCI layout with tar and sha256sum"
	rm -f "$out"
	assemble_by_hand || die "writing the OCI layout failed"
	say "assembled by hand (tar + sha256sum)"
fi
say "wrote $out ($tag, $(du -h "$out" | cut -f1))"
