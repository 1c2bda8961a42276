#!/usr/bin/env bash
# ferry.TokenLoader on a ferry mount of an HTTP dataset reads by the C loader's fast path
# (read_path "ferry-direct": the daemon's cache file, checked against its block checksums),
# never falls back (no "ferry fast path" warning), and gives the batches the C loader gives on
# the source files; with FERRY_LOADER_DIRECT=0 it reads through the mount (io_uring), alike.
. "$(dirname "$0")/python_lib.sh"
need_fuse

mkdir -p "$T/www/data"
"$PY" -c "
import numpy as np, pyhelp
rng = np.random.default_rng(8)
for i in range(4):
    pyhelp.llmc('$T/www/data/train_%03d.bin' % i, rng.integers(0, 50000, 700000), vocab=50000)"
serve_nginx "$T/www"
mount_ferry "http://127.0.0.1:$PORT/data/" "$T/mnt" --cache-size 1G --chunk-size 1M

cat >"$T/read.py" <<'PY'
import hashlib, sys, ferry
data, want_path = sys.argv[1], sys.argv[2]
l = ferry.TokenLoader(data + "/train_*.bin", 256, 8, seed=3)
if l.read_path != want_path:
    raise SystemExit("read path %s, want %s" % (l.read_path, want_path))
h = hashlib.sha256()
for _ in range(300):  # past the first window, so several windows are read
    x, y = l.next_batch()
    h.update(x.tobytes() + y.tobytes())
print(h.hexdigest())
PY
src=$("$PY" "$T/read.py" "$T/www/data" io_uring) || fail "reading the source failed"
FERRY_LOADER_DUMP=$("$dump" --data "$T/www/data/train_*.bin" --batch 8 --seq 256 --seed 3 \
	--shuffle --steps 300 --out "$T/c.dump" 2>&1) || fail "loader-dump: $FERRY_LOADER_DUMP"
c=$("$PY" -c "
import hashlib, pyhelp
h = hashlib.sha256()
for e, p, x, y in pyhelp.read_dump('$T/c.dump', 8, 256):
    h.update(x.tobytes() + y.tobytes())
print(h.hexdigest())")
[ "$src" = "$c" ] || fail "python's batches on the source differ from the C loader's"
direct=$("$PY" "$T/read.py" "$T/mnt" ferry-direct 2>"$T/direct.err") ||
	{ cat "$T/direct.err" >&2; fail "reading the mount by the direct path failed"; }
if grep -q "ferry fast path" "$T/direct.err"; then
	cat "$T/direct.err" >&2
	fail "the fast path fell back"
fi
[ "$direct" = "$src" ] || fail "the direct path's batches differ from the source's"
log "direct path: 300 batches equal the C loader's on the source"
plain=$(FERRY_LOADER_DIRECT=0 "$PY" "$T/read.py" "$T/mnt" io_uring) ||
	fail "reading through the mount failed"
[ "$plain" = "$src" ] || fail "the batches read through the mount differ from the source's"
umount_ferry "$T/mnt"
pass "on a ferry mount the Python loader takes the direct path and reads the same batches"
