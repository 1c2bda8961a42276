#!/usr/bin/env bash
# Unmodified tools on the mount give the source's answers: ls -lR, find, stat, du
# --apparent-size, cp -r, tar, dd at several block sizes, numpy.memmap. Source mtimes are
# set to whole minutes, so a listing with minute resolution (autoindex) is exact too.
. "$(dirname "$0")/lib.sh"
need_fuse
need_python numpy
make_dataset "$T/src"
make_tree "$T/src" tokens.u16:6M small/x:100K small/y:1
i=0
while read -r p; do
	touch -h -d "2023-0$((i % 9 + 1))-1$((i % 10)) 0$((i % 10)):$((10 + i)):00 UTC" "$p"
	i=$((i + 1))
done < <(find "$T/src" -mindepth 1 -depth)
serve_nginx "$T/src"
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
S=$T/src M=$T/mnt

log "ls -lR: types, sizes, mtimes and names"
# A directory's own size is the file system's business (4096 on ext4), so it is left out.
lsr() { (cd "$1" && ls -lR --time-style=+%s . |
	awk '/^[-dl]/ { t = substr($1, 1, 1); print t, t == "d" ? "-" : $5, $6, $7 } /:$/'); }
diff <(lsr "$S") <(lsr "$M") >&2 || fail "ls -lR differs"

log "find"
fnd() { (cd "$1" && find . -mindepth 1 -printf '%y %s %T@ %P\n' | sed 's/\.0000000000 / /' |
	awk '$1 == "d" { $2 = "-" } 1' | sort); }
diff <(fnd "$S") <(fnd "$M") >&2 || fail "find -printf differs"
[ "$(find "$M" -type f -size +1M | wc -l)" = "$(find "$S" -type f -size +1M | wc -l)" ] ||
	fail "find -size differs"

log "stat"
for f in one.bin a/b/twenty.bin a/chunk+1.bin empty.bin small/y; do
	[ "$(stat -c '%s %F %Y' "$S/$f")" = "$(stat -c '%s %F %Y' "$M/$f")" ] ||
		fail "stat $f: $(stat -c '%s %F %Y' "$M/$f"), source $(stat -c '%s %F %Y' "$S/$f")"
done
[ "$(stat -c %F "$M/a/b")" = directory ] || fail "stat of a directory"

log "du --apparent-size"
duf() { (cd "$1" && find . -type f -print0 | du --apparent-size -b --files0-from=- | sort -k2); }
diff <(duf "$S") <(duf "$M") >&2 || fail "du --apparent-size differs"

log "cp -r and tar"
cp -r "$M" "$T/cp"
diff -r "$S" "$T/cp" >&2 || fail "cp -r differs"
mkdir "$T/untar"
tar -C "$M" -cf - . | tar -C "$T/untar" -xf - || fail "tar through the mount failed"
diff -r "$S" "$T/untar" >&2 || fail "tar round trip differs"
tar -C "$M" -cf "$T/m.tar" --sort=name --mtime=@0 --owner=0 --group=0 --mode=u=rwX,go=rX .
tar -C "$S" -cf "$T/s.tar" --sort=name --mtime=@0 --owner=0 --group=0 --mode=u=rwX,go=rX .
cmp "$T/m.tar" "$T/s.tar" || fail "normalised tar of the mount differs from the source's"

log "dd at several block sizes"
for bs in 1 511 4096 65536 1M 3M 16M; do
	f=a/b/twenty.bin
	[ "$bs" = 1 ] || [ "$bs" = 511 ] && f=small/x
	a=$(dd if="$M/$f" bs=$bs status=none | sha256sum)
	b=$(sha256sum <"$S/$f")
	[ "$a" = "$b" ] || fail "dd bs=$bs of $f differs"
	a=$(dd if="$M/a/chunk+1.bin" bs=$bs skip=3 count=5 status=none | sha256sum)
	b=$(dd if="$S/a/chunk+1.bin" bs=$bs skip=3 count=5 status=none | sha256sum)
	[ "$a" = "$b" ] || fail "dd bs=$bs skip=3 count=5 differs"
done
dd if="$M/a/b/twenty.bin" of="$T/direct" bs=1M iflag=direct status=none 2>/dev/null &&
	{ cmp "$T/direct" "$S/a/b/twenty.bin" || fail "dd iflag=direct differs"; }

log "numpy.memmap"
"$PY" - "$S/tokens.u16" "$M/tokens.u16" <<'PY'
import numpy as np, sys
a = np.memmap(sys.argv[1], dtype=np.uint16, mode="r")
b = np.memmap(sys.argv[2], dtype=np.uint16, mode="r")
assert a.shape == b.shape, (a.shape, b.shape)
idx = np.random.default_rng(3).integers(0, a.size, 5000)
assert (a[idx] == b[idx]).all(), "random elements differ"
assert a[a.size - 1] == b[b.size - 1] and a[123457] == b[123457]
assert int(a.sum(dtype=np.uint64)) == int(b.sum(dtype=np.uint64)), "sums differ"
assert (a[::4096] == b[::4096]).all()
print("memmap of %d tokens agrees" % a.size)
PY
umount_ferry "$T/mnt"
pass
