#!/usr/bin/env bash
# Through a ferry mount of an HTTP dataset, under `ulimit -n 256` for the loader:
#  - 10,000 llm.c shards of 200 tokens, shuffled (one window over all of them): every header
#    is read at open, and the batches of a whole epoch equal those read from the source
#    files (before the LRU of descriptors, batch 0 failed with an I/O error);
#  - 150 shards of 40,000 tokens, each window piece large enough for the fast path (O_DIRECT
#    reads of the daemon's cache files, a descriptor per cache file kept by each reader):
#    equal batches again, with the fast path in use, while the readers' groups keep apart
#    shards that share a descriptor slot.
. "$(dirname "$0")/lib.sh"
need_fuse
need_python numpy
DUMP=$FERRY_BUILD/loader/loader-dump
[ -x "$DUMP" ] || fail "loader-dump not built in $FERRY_BUILD"
"$PY" - "$T/www" <<'PY'
import os, sys, numpy as np
root = sys.argv[1]
rng = np.random.default_rng(7)
for name, nr, n in (('tiny', 10000, 200), ('mid', 150, 40000)):
    d = os.path.join(root, name); os.makedirs(d)
    h = np.zeros(256, dtype='<i4'); h[:3] = [20240520, 1, n]
    for s in range(nr):
        t = rng.integers(0, 50257, size=n).astype('<u2')
        with open('%s/s_%05d.bin' % (d, s), 'wb') as f:
            f.write(h.tobytes() + t.tobytes())
PY
serve_nginx "$T/www"

# dump NAME DATA STEPS [ARGS...]: the loader's batches under ulimit -n 256 into $T/NAME.
dump() {
	local name=$1 data=$2 steps=$3
	shift 3
	( ulimit -n 256 && exec timeout 300 "$DUMP" --data "$data" --batch 8 --seq 64 --seed 9 \
		--shuffle --steps "$steps" --out "$T/$name" --verbose "$@" ) 2>"$T/$name.err" ||
		{ cat "$T/$name.err" >&2; fail "$name: the loader failed"; }
}
for set in tiny mid; do
	mount_ferry "http://127.0.0.1:$PORT/$set/" "$T/mnt_$set" --chunk-size 1M
	case $set in
	tiny) steps=$((10000 * 3 / 8)) ;;        # (200 - 1) / 64 = 3 samples a shard
	mid) steps=$((150 * 624 / 8)) ;;         # (40000 - 1) / 64 = 624
	esac
	log "$set: one epoch ($steps batches) from the source and through the mount"
	dump "$set.src" "$T/www/$set" "$steps"
	dump "$set.mnt" "$T/mnt_$set" "$steps"
	cmp -s "$T/$set.src" "$T/$set.mnt" || fail "$set: batches through the mount differ"
	[ "$(stat -c %s "$T/$set.src")" -eq $((steps * (16 + 2 * 8 * 64 * 4))) ] ||
		fail "$set: short dump"
	grep -h "read path\|fast path:" "$T/$set.mnt.err" | sed 's/^/  /'
	umount_ferry "$T/mnt_$set"
done
grep -q "read path ferry-direct" "$T/mid.mnt.err" || fail "mid: the fast path was not chosen"
grep -Eq "fast path: [1-9][0-9]* reads of cache files" "$T/mid.mnt.err" ||
	fail "mid: no reads by the fast path"
pass
