# shellcheck shell=bash
# Shared by tests/integ/python_*.sh (sourced instead of lib.sh): the integration harness, the
# ferry package from the source tree on the library of the build tree (FERRY_LIB), the C oracle
# (loader-dump), and $T/pyhelp.py: shards written by numpy and loader-dump's files read back.
# SKIP (77) only where /usr/bin/python3 has no numpy; torch, where a test needs it, must be there.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$PY" -c "import numpy" 2>/dev/null || skip "no numpy for $PY (python3-numpy)"
dump=$FERRY_BUILD/loader/loader-dump
need_built "$dump"
[ -f "$FERRY_BUILD/loader/libferry_loader.so" ] ||
	fail "$FERRY_BUILD/loader/libferry_loader.so is not built (ninja -C $FERRY_BUILD)"
export FERRY_LIB=$FERRY_BUILD/loader/libferry_loader.so
# A sanitizer build's library needs its runtimes loaded first, which an uninstrumented python
# only does when they are preloaded: python runs through a wrapper that preloads them (leak
# checks off: they would report the interpreter's own allocations). The C programs python
# starts (pyhelp.c_dump) get the environment of this script back.
san_libs=$(ldd "$FERRY_LIB" | awk '/lib(asan|ubsan)\.so/ { print $3 }' | tr '\n' ' ')
if [ -n "$san_libs" ]; then
	cat >"$T/python3" <<PYWRAP
#!/bin/sh
export FERRY_TEST_LD_PRELOAD="\${LD_PRELOAD-}" FERRY_TEST_ASAN_OPTIONS="\${ASAN_OPTIONS-}"
export LD_PRELOAD="$san_libs\${LD_PRELOAD-}"
export ASAN_OPTIONS="\${ASAN_OPTIONS-}\${ASAN_OPTIONS:+:}detect_leaks=0"
exec /usr/bin/python3 "\$@"
PYWRAP
	chmod +x "$T/python3"
	PY=$T/python3
fi
export PYTHONPATH=$FERRY_SRC/loader/python:$T
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the source tree
# ferry._fast, the default mode's per-batch work in C, beside the library where meson built it:
# then it must load (a test that quietly fell back would test the pure path twice). The
# *_pure_path entries of tests/integ/meson.build set FERRY_PURE=1: the pure-Python twin.
if [ "${FERRY_PURE:-0}" = 0 ] && compgen -G "$FERRY_BUILD/loader/_fast*.so" >/dev/null; then
	"$PY" -c "import ferry, sys; sys.exit(ferry._fast is None)" ||
		fail "ferry._fast is built in $FERRY_BUILD/loader but the package does not load it"
fi
cat >"$T/pyhelp.py" <<'PY'
"""Test helpers: shards written with numpy, loader-dump's batch files read back."""
import os, struct, subprocess, numpy as np

def llmc(path, tokens, vocab=0, u32=False):
    h = np.zeros(256, dtype="<i4")
    h[:3] = [20240801 if u32 else 20240520, 7 if u32 else 1, len(tokens)]
    h[3] = vocab
    with open(path, "wb") as f:
        f.write(h.tobytes() + np.asarray(tokens, dtype="<u4" if u32 else "<u2").tobytes())

def megatron(prefix, sizes, tokens):
    sizes = np.asarray(sizes, dtype="<i4")
    ptr = (np.concatenate([[0], np.cumsum(sizes)[:-1]]) * 2).astype("<i8")
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, len(sizes), len(sizes) + 1))
        f.write(sizes.tobytes() + ptr.tobytes())
        f.write(np.arange(len(sizes) + 1, dtype="<i8").tobytes())
    np.asarray(tokens, dtype="<u2").tofile(prefix + ".bin")

def read_dump(path, batch, seq_len):
    """loader-dump --out: per batch, epoch and position (u64) then inputs, targets (B*T i32)."""
    n = batch * seq_len
    raw = open(path, "rb").read()
    rec = 16 + 8 * n
    assert len(raw) % rec == 0, (path, len(raw), rec)
    out = []
    for i in range(len(raw) // rec):
        r = raw[i * rec:(i + 1) * rec]
        e, p = struct.unpack("<QQ", r[:16])
        a = np.frombuffer(r[16:], dtype="<i4")
        out.append((e, p, a[:n].reshape(batch, seq_len), a[n:].reshape(batch, seq_len)))
    return out

def c_env():
    """The environment of the test script, without what python3's sanitizer wrapper added."""
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS"):
        if "FERRY_TEST_" + k in env:
            v = env.pop("FERRY_TEST_" + k)
            if v:
                env[k] = v
            else:
                env.pop(k, None)
    return env

def c_dump(build, out, data, batch, seq, steps, extra=()):
    """The C loader's batches (loader-dump), the oracle."""
    cmd = [build + "/loader/loader-dump", "--data", data, "--batch", str(batch), "--seq",
           str(seq), "--steps", str(steps), "--out", out] + [str(x) for x in extra]
    r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=c_env())
    if r.returncode:
        raise SystemExit("loader-dump failed: %s: %s" % (" ".join(cmd), r.stderr.strip()))
    return read_dump(out, batch, seq)
PY
