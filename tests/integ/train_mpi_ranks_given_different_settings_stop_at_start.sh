#!/usr/bin/env bash
# Two MPI ranks of one `ferry train` job given different settings or different data: every
# rank prints one line naming the setting that differs (with its own value) and the job ends
# with a non-zero status within seconds, before any step. Different --seq-len used to abort one
# rank in free() and leave the other waiting; different --data or --lr trained silently. The
# same --data glob naming other files on each rank (here: relative, from two working
# directories) is caught by the data's identity: sizes, then versions (mtime).
source "$(dirname "$0")/train_lib.sh"
need_mpi
work=$T
make_shards "$work/a/data"
cp -a "$work/a/data" "$work/b"
mpirun=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1)
base=(--layers 1 --heads 1 --dim 16 --batch 2 --steps 3 --warmup 1 --eval-every 0
	--ckpt-every 0 --threads 1)

# expect NAME RANK0-ARGS -- RANK1-ARGS: both ranks name NAME, the job fails, nothing trains
expect() {
	local name=$1 r0=() r1=() rc=0 start
	shift
	while [ "$1" != "--" ]; do r0+=("$1"); shift; done
	shift
	r1=("$@")
	rm -rf "$work/run"
	start=$(date +%s)
	timeout -k 5 30 "${mpirun[@]}" -np 1 "${r0[@]}" : -np 1 "${r1[@]}" >"$work/out" 2>"$work/err" || rc=$?
	[ "$rc" != 124 ] && [ "$rc" != 137 ] || { cat "$work/err" >&2; fail "$name: the job hung (killed after 30 s)"; }
	[ "$rc" != 0 ] || fail "$name: the job exited 0"
	for r in 0 1; do
		[ "$(grep -c "^ferry train: rank $r: ranks were given different $name (here: " "$work/err")" = 1 ] ||
			{ cat "$work/err" >&2; fail "$name: rank $r did not say one line naming $name"; }
	done
	! grep -q '^step' "$work/out" || fail "$name: a step ran"
	echo "ok: $name ($(($(date +%s) - start)) s): $(grep -m1 '^ferry train: rank 0' "$work/err")"
}

f=("$FERRY" train --data "$work/a/data/train_*.bin" --out "$work/run" "${base[@]}")
expect --seq-len "${f[@]}" --seq-len 32 -- "${f[@]}" --seq-len 64
expect --dim "${f[@]}" --seq-len 32 -- "${f[@]}" --seq-len 32 --dim 32
expect --lr "${f[@]}" --seq-len 32 -- "${f[@]}" --seq-len 32 --lr 1e-3
expect --data "${f[@]}" --seq-len 32 -- "$FERRY" train --data "$work/b/train_*.bin" \
	--out "$work/run" "${base[@]}" --seq-len 32

# one --data string, other files: rank 1 runs in b/, where one shard has two tokens more
mkdir -p "$work/b2"
mv "$work/b" "$work/b2/data"
/usr/bin/python3 - "$work/b2/data/train_001.bin" <<'PY'
import sys, numpy as np
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
h = np.frombuffer(bytes(b[:1024]), dtype=np.int32).copy()
h[2] += 2
open(p, "wb").write(h.tobytes() + bytes(b[1024:]) + b"\x01\x00\x02\x00")  # two u16 tokens
PY
g=(train --data "data/train_*.bin" --out "$work/run" "${base[@]}" --seq-len 32)
expect "--data sizes" --wdir "$work/a" "$FERRY" "${g[@]}" -- --wdir "$work/b2" "$FERRY" "${g[@]}"
# the same bytes, copied at another time: the files' versions (mtime) differ
rm -rf "$work/b2/data"
cp -r "$work/a/data" "$work/b2/data"
touch -d '2020-01-01' "$work/b2/data/train_000.bin"
expect "--data file versions (mtime or ETag)" --wdir "$work/a" "$FERRY" "${g[@]}" -- \
	--wdir "$work/b2" "$FERRY" "${g[@]}"

# the same settings and data on both ranks still train
rm -rf "$work/run"
timeout -k 5 60 "${mpirun[@]}" -np 2 "${f[@]}" --seq-len 32 >"$work/out" 2>"$work/err" ||
	{ cat "$work/err" >&2; fail "two agreeing ranks did not train"; }
[ "$(grep -c '^step' "$work/out")" = 3 ] || fail "two agreeing ranks did not log 3 steps"
pass "ranks given different settings or data stop at start, naming the setting"
