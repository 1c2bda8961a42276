#!/usr/bin/env bash
# GPU check of the loader's staging: builds ferry with -Dcuda=enabled (unless FERRY_BUILD has
# loader-gpu-check already), then runs loader-gpu-check: batches staged onto the GPU equal the
# host batches and the file tokens, and host-to-device GB/s of the staging path against a
# plain pinned cudaMemcpyAsync (ratio, target >= 0.9). SKIP (77) without nvcc or a GPU.
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
	meson setup "$tmp/build" "$src" -Dcuda=enabled -Dtests=false >"$tmp/setup.log" 2>&1 ||
		{ cat "$tmp/setup.log" >&2; echo "FAIL: meson setup -Dcuda=enabled"; exit 1; }
	ninja -C "$tmp/build" loader/loader-gpu-check >"$tmp/build.log" 2>&1 ||
		{ tail -40 "$tmp/build.log" >&2; echo "FAIL: build"; exit 1; }
	check=$tmp/build/loader/loader-gpu-check
fi
set +e
"$check" "$@"
rc=$?
set -e
exit $rc
