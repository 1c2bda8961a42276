#!/usr/bin/env bash
# GPU check of the loader's staging: builds ferry with CUDA (unless FERRY_BUILD has
# loader-gpu-check already), then runs loader-gpu-check: batches staged onto the GPU equal the
# host batches and the file tokens, and host-to-device GB/s of the staging path against a
# plain pinned cudaMemcpyAsync (ratio, target >= 0.9). SKIP (77) without a whole CUDA toolkit
# or without a GPU.
# Then the cufile step: where libcufile is installed, the loader on a ferry mount of a local
# directory takes the cufile path and its batches equal the source files'; else it prints
# SKIP for that step (the exit status is the staging check's).
set -euo pipefail
src=${FERRY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${FERRY_BUILD:-}
check=${build:+$build/loader/loader-gpu-check}
tmp=""
trap '[ -n "$tmp" ] && rm -rf "$tmp"' EXIT

if [ -z "$check" ] || [ ! -x "$check" ]; then
	command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
		{ echo "SKIP: no nvcc"; exit 77; }
	tmp=$(mktemp -d /tmp/ferry_gpu_build.XXXXXX)
	meson setup "$tmp/build" "$src" -Dtests=false >"$tmp/setup.log" 2>&1 ||
		{ cat "$tmp/setup.log" >&2; echo "FAIL: meson setup"; exit 1; }
	# nvcc alone is not a toolkit: without its runtime libraries nothing here can be built.
	targets=$(ninja -C "$tmp/build" -t targets all)
	if ! grep -q '^loader/loader-gpu-check:' <<<"$targets"; then
		grep -m1 'CUDA parts are not built' "$tmp/setup.log" || true
		echo "SKIP: this CUDA toolkit cannot build the GPU check"; exit 77
	fi
	ninja -C "$tmp/build" loader/loader-gpu-check >"$tmp/build.log" 2>&1 ||
		{ tail -40 "$tmp/build.log" >&2; echo "FAIL: build"; exit 1; }
	check=$tmp/build/loader/loader-gpu-check
fi
set +e
"$check" "$@"
rc=$?
set -e

cufile_step() {
	local bdir ferry data_tool d pid=""
	if ! ldconfig -p 2>/dev/null | grep -q 'libcufile\.so' &&
		! ls /usr/local/cuda/lib64/libcufile.so* >/dev/null 2>&1; then
		echo "SKIP: cufile step: no libcufile here"; return 0
	fi
	[ -e /dev/fuse ] && command -v fusermount3 >/dev/null ||
		{ echo "SKIP: cufile step: no FUSE here"; return 0; }
	bdir=$(dirname "$(dirname "$check")")
	ninja -C "$bdir" mount/ferry loader/ferry-data >"$bdir/cufile_build.log" 2>&1 ||
		{ tail -20 "$bdir/cufile_build.log" >&2; echo "FAIL: cufile step: build"; return 1; }
	ferry=$bdir/mount/ferry data_tool=$bdir/loader/ferry-data
	d=$(mktemp -d /tmp/ferry_cufile.XXXXXX)
	mkdir -p "$d/src" "$d/mnt"
	/usr/bin/python3 -c "
import random; random.seed(7)
w = ['alpha', 'beta', 'gamma', 'ferry', '\n']
open('$d/text.txt', 'w').write(' '.join(random.choice(w) for _ in range(1500000)))"
	"$data_tool" make --text "$d/text.txt" --out "$d/src" --shard-tokens 1000000 >/dev/null
	"$ferry" mount "$d/src" "$d/mnt" --cache-dir "$d/cache" --cache-size 1G --chunk-size 1M \
		-f 2>"$d/daemon.log" &
	pid=$!
	for _ in $(seq 100); do
		[ -e "$d/mnt/train_000000.bin" ] && break
		sleep 0.1
	done
	local st=0
	# The cache file must live where GDS can read it (a local ext4/xfs on NVMe is typical).
	"$check" --cufile "$d/mnt" "$d/src" || st=$?
	mountpoint -q "$d/mnt" && fusermount3 -u "$d/mnt"
	kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
	[ "$st" = 0 ] || [ "$st" = 77 ] || cat "$d/daemon.log" >&2
	rm -rf "$d"
	[ "$st" = 77 ] && { echo "SKIP: cufile step: the loader did not take the cufile path"; return 0; }
	[ "$st" = 0 ] || { echo "FAIL: cufile step"; return 1; }
	echo "cufile step: ok"
}
if [ "$rc" != 77 ] && [ "$#" = 0 ]; then
	cufile_step || rc=1
fi
exit $rc
