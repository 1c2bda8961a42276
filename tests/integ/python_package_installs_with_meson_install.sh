#!/usr/bin/env bash
# The documented install (docs/python.md: meson install --tags python-runtime) puts the ferry
# package and libferry_loader.so together in the directory Debian's python3 installs local
# packages to, and the package found there loads the library beside it: with no FERRY_LIB, from
# a directory outside the source tree, it gives the same batches as the build tree's library.
# Where meson built ferry._fast (python3-dev), it is installed beside them and the installed
# package takes it.
. "$(dirname "$0")/python_lib.sh"
need_cmd meson

meson install -C "$FERRY_BUILD" --no-rebuild --tags python-runtime --destdir "$T/root" \
	>"$T/install.out" 2>&1 || { cat "$T/install.out" >&2; fail "meson install failed"; }
platlib=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
pkg=$T/root$platlib/ferry
for f in __init__.py _lib.py torch.py libferry_loader.so; do
	[ -f "$pkg/$f" ] || { cat "$T/install.out" >&2; fail "meson install put no $f in $pkg"; }
done
fast=$(cd "$FERRY_BUILD/loader" && compgen -G "_fast*.so" || true)
if [ -n "$fast" ]; then
	[ -f "$pkg/$fast" ] || { cat "$T/install.out" >&2; fail "meson install put no $fast in $pkg"; }
fi
# Nothing else: the tag installs the package alone, not the ferry binaries.
extra=$(find "$T/root" -type f | grep -v "^$pkg/" || true)
[ -z "$extra" ] || fail "the python-runtime tag installed more: $extra"
"$PY" -c "import numpy, pyhelp
rng = numpy.random.default_rng(2)
pyhelp.llmc('$T/s.bin', rng.integers(0, 65535, 20000), vocab=65535)"
run_py() { # env...: the first 3 batches' bytes, hashed, and where ferry and its library came from
	(cd / && env -u FERRY_LIB "$@" "$PY" -c "
import hashlib, ferry, ferry._lib
l = ferry.TokenLoader('$T/s.bin', 32, 4, seed=9)
h = hashlib.sha256()
for _ in range(3):
    x, y = l.next_batch(); h.update(x.tobytes() + y.tobytes())
print(ferry.__file__, ferry._lib.lib._name, h.hexdigest(),
      ferry._fast.__file__ if ferry._fast else 'none')")
}
read -r file lib installed fastfile < <(run_py PYTHONPATH="$T/root$platlib:$T") ||
	fail "the installed package did not load"
if [ -n "$fast" ]; then
	[ "$fastfile" = "$pkg/$fast" ] || fail "the installed package took ferry._fast from $fastfile"
fi
[ "$file" = "$pkg/__init__.py" ] || fail "ferry came from $file, not $pkg"
[ "$lib" = "$pkg/libferry_loader.so" ] || fail "the installed package loaded $lib"
read -r _ lib2 built _ < <(run_py PYTHONPATH="$FERRY_SRC/loader/python:$T" \
	FERRY_LIB="$FERRY_BUILD/loader/libferry_loader.so") || fail "the source tree's package did not load"
[ "$lib2" = "$FERRY_BUILD/loader/libferry_loader.so" ] || fail "FERRY_LIB was not taken: $lib2"
[ "$installed" = "$built" ] || fail "the installed package's batches differ from the build tree's"
# Without ferry._fast beside the library, or with one that cannot load, the package takes its
# pure-Python path: the same batches.
mkdir -p "$T/libonly" "$T/badfast"
cp "$FERRY_BUILD/loader/libferry_loader.so" "$T/libonly/"
cp "$FERRY_BUILD/loader/libferry_loader.so" "$T/badfast/"
echo "not an ELF file" >"$T/badfast/_fast$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
for d in libonly badfast; do
	read -r _ _ pure fastfile < <(run_py PYTHONPATH="$FERRY_SRC/loader/python:$T" \
		FERRY_LIB="$T/$d/libferry_loader.so") || fail "$d: the package did not load"
	[ "$fastfile" = none ] || fail "$d: took ferry._fast from $fastfile"
	[ "$pure" = "$built" ] || fail "$d: the pure path's batches differ"
done
# Without FERRY_LIB and with no library beside it, the import fails with one clear line.
mkdir -p "$T/bare/ferry" && cp "$FERRY_SRC"/loader/python/ferry/*.py "$T/bare/ferry/"
if (cd / && env -u FERRY_LIB PYTHONPATH="$T/bare" "$PY" -c "import ferry" 2>"$T/err"); then
	fail "ferry imported with no library to load"
fi
grep -q "ImportError: cannot load libferry_loader.so (set FERRY_LIB to its path, or run meson install)" \
	"$T/err" || { cat "$T/err" >&2; fail "no clear line without a library"; }
pass "meson install --tags python-runtime installs a package that finds its library"
