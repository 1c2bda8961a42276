#!/usr/bin/env bash
# Bad token files are refused at once, with one line that names the file:
#  - a FIFO (nobody writing to it) given to `ferry data inspect` and to the loader: open() of a
#    FIFO waits for a writer, so without care both hang for ever;
#  - an 8 GiB sparse Megatron .idx (zeros, a header whose counts do not give its size, and a
#    header that fits with a first sequence longer than the .bin): rejected in under a second
#    with a small maximum RSS, by `ferry data inspect` and by the loader; reading it whole
#    first took 45 s and 8 GB;
#  - a uint32 llm.c shard among uint16 ones is named when the loader opens, before any
#    batch, even when the first batches never reach it.
. "$(dirname "$0")/lib.sh"
need_python numpy
DUMP=$FERRY_BUILD/loader/loader-dump
[ -x "$FERRY" ] && [ -x "$DUMP" ] || fail "ferry or loader-dump not built in $FERRY_BUILD"
TIME=/usr/bin/time
[ -x "$TIME" ] || fail "no $TIME"

# refused CMD...: fails with rc 1 within 2 s (and 10 s at worst), one line on stderr.
refused() {
	local desc=$1 rc=0 t0 t1
	shift
	t0=$(date +%s.%N)
	timeout 10 "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
	t1=$(date +%s.%N)
	[ "$rc" -ne 124 ] || fail "$desc: still running after 10 s"
	[ "$rc" -eq 1 ] || { cat "$T/err" >&2; fail "$desc: exit $rc, want 1"; }
	[ "$(grep -c . "$T/err")" -eq 1 ] || { cat "$T/err" >&2; fail "$desc: want one line"; }
	"$PY" -c "import sys; sys.exit(float('$t1') - float('$t0') > 2)" ||
		fail "$desc: took $t0 -> $t1"
	log "$desc: $(cat "$T/err")"
}

log "a FIFO"
mkfifo "$T/tokens.bin"
refused "ferry data inspect on a FIFO" "$FERRY" data inspect "$T/tokens.bin"
grep -qF "$T/tokens.bin: not a regular file (a FIFO)" "$T/err" || fail "inspect: $(cat "$T/err")"
refused "the loader on a FIFO" "$DUMP" --data "$T/tokens.bin" --steps 1
grep -qF "$T/tokens.bin: not a regular file (a FIFO)" "$T/err" || fail "loader: $(cat "$T/err")"
mkdir "$T/mega"
mkfifo "$T/mega/m.idx"
printf 'abcdefgh' >"$T/mega/m.bin"
refused "the loader on a Megatron pair whose .idx is a FIFO" \
	"$DUMP" --data "$T/mega/m.bin" --format megatron --steps 1
grep -qF "m.idx: not a regular file (a FIFO)" "$T/err" || fail "loader: $(cat "$T/err")"
rm "$T/mega/m.idx"

log "an 8 GiB sparse .idx"
# sparse KIND: writes $T/mega/m.idx, 8 GiB but for its first bytes.
sparse() {
	"$PY" - "$T/mega/m.idx" "$1" <<'PY'
import struct, sys
path, kind = sys.argv[1], sys.argv[2]
n = 715827879                       # 34 + 12 n + 8 * 1 bytes: about 8 GiB
size = 34 + 12 * n + 8
with open(path, 'wb') as f:
    if kind == 'counts':            # counts that do not give the size
        f.write(b'MMIDIDX\0\0' + struct.pack('<QBQQ', 1, 8, n - 1, 1))
    elif kind == 'first':           # counts that fit; sequence 0 longer than the .bin
        f.write(b'MMIDIDX\0\0' + struct.pack('<QBQQ', 1, 8, n, 1) + struct.pack('<i', 1 << 30))
    f.truncate(size)
PY
}
# The same commands on a 10-byte .idx: what the binaries take before any data (a build with
# CUDA maps its libraries and starts near 200 MiB).
mkdir -p "$T/tiny"
printf 'not an idx' >"$T/tiny/m.idx"
: >"$T/tiny/m.bin"
base_kib() {
	"$TIME" -f '%M' -o "$T/time" "$@" >/dev/null 2>&1 || true
	tail -n 1 "$T/time"
}
base_inspect=$(base_kib "$FERRY" data inspect "$T/tiny/m.idx")
base_dump=$(base_kib "$DUMP" --data "$T/tiny" --format megatron --steps 1)
# small_and_quick DESC BASE_KIB CMD...: refused, and /usr/bin/time saw under 1 s and under
# 64 MiB of max RSS above BASE_KIB.
small_and_quick() {
	local desc=$1 base=$2
	shift 2
	refused "$desc" "$TIME" -f '%e %M' -o "$T/time" "$@"
	read -r secs kib < <(tail -n 1 "$T/time")
	"$PY" -c "import sys; sys.exit(not (float('$secs') < 1.0 and int('$kib') - int('$base') < 65536))" ||
		fail "$desc: $secs s, max RSS $kib KiB ($base KiB on a 10-byte file)"
	log "$desc: $secs s, max RSS $kib KiB ($base KiB on a 10-byte file)"
}
for kind in zeros counts first; do
	sparse $kind
	small_and_quick "ferry data inspect, $kind" "$base_inspect" "$FERRY" data inspect "$T/mega/m.idx"
	grep -qF "m.idx: " "$T/err" || fail "not named: $(cat "$T/err")"
	small_and_quick "the loader, $kind" "$base_dump" "$DUMP" --data "$T/mega" --format megatron --steps 1
	grep -qF "m.idx: " "$T/err" || fail "not named: $(cat "$T/err")"
done
grep -qF "the .bin has 8 bytes" "$T/err" || fail "first: $(cat "$T/err")"
rm -f "$T/mega/m.idx"

log "a uint32 shard among uint16 ones"
"$PY" - "$T/mixed" <<'PY'
import os, sys, numpy as np
d = sys.argv[1]; os.makedirs(d)
for i in range(6):
    w = 4 if i == 3 else 2          # 1000 u32 tokens: the size of 2000 u16 ones
    n = 1000 if w == 4 else 2000
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240801 if w == 4 else 20240520, 7 if w == 4 else 1, n]
    t = (np.arange(n) % 50000).astype('<u4' if w == 4 else '<u2')
    with open('%s/train_%06d.bin' % (d, i), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
# In file order the first batch lies in train_000000.bin: only a check at open finds shard 3.
refused "the loader, in file order, one batch" "$DUMP" --data "$T/mixed" --batch 2 --seq 16 --steps 1
grep -qF "loader-dump: $T/mixed/train_000003.bin: token width u32, the first shard's ($T/mixed/train_000000.bin) is u16" \
	"$T/err" || fail "not named at open: $(cat "$T/err")"
refused "the loader, shuffled, one batch" "$DUMP" --data "$T/mixed" --batch 2 --seq 16 \
	--shuffle --steps 1
grep -qF "train_000003.bin: token width u32" "$T/err" || fail "not named: $(cat "$T/err")"
pass
