#!/usr/bin/env bash
# Twenty thousand llm.c shards of 200 tokens under `ulimit -n 256`: the loader keeps a bounded
# number of them open (an LRU sized from RLIMIT_NOFILE), so a shuffle window over all of them
# (the default 2 MiB blocks make this whole set one window) loads, and every batch is right:
#  - shuffled: each row is identified from its tokens (token 2k of shard s is s, token 2k+1 is
#    2k+1) and equals the file's tokens there; one epoch visits each sample at most once and
#    holds steps x B of them; the batches equal those of a run without the limit, and
#    io_uring equals pread;
#  - file order: batch p row j is sample p*B+j, computed in python from the files.
# Before the LRU, batch 0 failed with "Too many open files".
. "$(dirname "$0")/lib.sh"
need_python numpy
DUMP=$FERRY_BUILD/loader/loader-dump
[ -x "$DUMP" ] || fail "loader-dump not built in $FERRY_BUILD"
B=8
TQ=16
log "writing 20000 shards"
"$PY" - "$T/data" <<'PY'
import os, sys, numpy as np
d = sys.argv[1]; os.makedirs(d)
h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, 200]
i = np.arange(200)
for s in range(20000):
    t = np.where(i % 2 == 0, s, i).astype('<u2')
    with open('%s/train_%06d.bin' % (d, s), 'wb') as f:
        f.write(h.tobytes() + t.tobytes())
PY
steps=$(( 20000 * ((200 - 1) / TQ) / B ))

# dump NAME IO ULIMIT ARGS...: the loader's batches into $T/NAME.
dump() {
	local name=$1 io=$2 lim=$3
	shift 3
	( ulimit -n "$lim" && FERRY_LOADER_IO=$io exec timeout 120 "$DUMP" --data "$T/data" \
		--batch $B --seq $TQ --seed 3 --out "$T/$name" "$@" ) 2>"$T/$name.err" ||
		{ cat "$T/$name.err" >&2; fail "$name: the loader failed"; }
}
log "shuffled, one epoch and a bit ($steps steps per epoch), under ulimit -n 256"
dump shuf io_uring 256 --shuffle --steps $((steps + 50))
dump shuf_pread pread 256 --shuffle --steps $((steps + 50))
dump shuf_free io_uring 4096 --shuffle --steps $((steps + 50))
cmp -s "$T/shuf" "$T/shuf_pread" || fail "io_uring and pread differ"
cmp -s "$T/shuf" "$T/shuf_free" || fail "under ulimit -n 256 the batches differ from a run without it"
log "file order"
dump seq io_uring 256 --steps 3000

"$PY" - "$T" $B $TQ "$steps" <<'PY'
import sys, numpy as np
d, B, T, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per = (200 - 1) // T
def tok(s, i):
    return np.where(i % 2 == 0, s, i).astype(np.int64)
def rows(name):
    raw = np.fromfile('%s/%s' % (d, name), dtype='<i4')
    rec = 4 + 2 * B * T
    assert len(raw) % rec == 0
    raw = raw.reshape(-1, rec)
    st = raw[:, :4].copy().view('<u8')            # epoch, position
    inp = raw[:, 4:4 + B * T].reshape(-1, B, T)
    tgt = raw[:, 4 + B * T:].reshape(-1, B, T)
    return st, inp, tgt
def check_rows(s, i0, inp, tgt):
    assert ((s >= 0) & (s < 20000)).all() and ((i0 % T) == 0).all() and (i0 + T < 200).all()
    cols = i0[..., None] + np.arange(T + 1)
    want = tok(s[..., None], cols)
    assert (inp == want[..., :-1]).all(), 'inputs differ from the files'
    assert (tgt == want[..., 1:]).all(), 'targets differ from the files'
st, inp, tgt = rows('shuf')
n = len(st)
assert (st[:, 0] * steps + st[:, 1] == np.arange(n)).all(), 'positions out of order'
s, i0 = inp[:, :, 0], inp[:, :, 1] - 1
check_rows(s, i0, inp, tgt)
ep0 = st[:, 0] == 0
g = (s[ep0] * per + i0[ep0] // T).ravel()
assert len(np.unique(g)) == steps * B, 'epoch 0 repeats samples'
print('shuffled: %d batches right; epoch 0 has %d distinct samples' % (n, len(np.unique(g))))
st, inp, tgt = rows('seq')
g = st[:, 1:2] * B + np.arange(B)
check_rows(g // per, (g % per) * T, inp, tgt)
print('file order: %d batches right' % len(st))
PY
pass
