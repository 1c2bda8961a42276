#!/bin/bash
# tests/gpu/broken_driver.sh GPU_INFO FAKE_DRIVER_DIR: with a driver that is installed but
# unusable (an empty libcuda.so.1 first on the library path), the GPU checks must FAIL (exit 1,
# the runtime's error named), not SKIP as on a machine without a GPU.
out=$(LD_LIBRARY_PATH=$2 "$1" 2>&1)
st=$?
echo "$out"
if [ "$st" != 1 ] || ! grep -q '^error: cudaGetDeviceCount: ' <<<"$out"; then
	echo "FAIL: gpu_info exited $st, expected 1 with the runtime's error"
	exit 1
fi
echo "PASS: a broken driver fails"
