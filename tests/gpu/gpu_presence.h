/* tests/gpu/: whether a machine has a GPU the CUDA runtime can use, for every GPU check
 * (gpu_test.h, loader_gpu.c): none at all is a SKIP, a driver the runtime cannot use a FAIL. */
#ifndef FERRY_TESTS_GPU_PRESENCE_H
#define FERRY_TESTS_GPU_PRESENCE_H

#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

/* A driver is installed: its library loads or its control device exists. */
static inline int driver_installed(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
	if (h)
		dlclose(h);
	return h != NULL || access("/dev/nvidiactl", F_OK) == 0;
}

/* 1: a device the runtime can use. 0: no GPU here at all: no device, or no driver (the runtime
 * reports a missing libcuda as an insufficient driver). -1, with the reason in err: there is a
 * driver but the runtime cannot use it (older than the runtime needs, not loaded, ...): a
 * broken GPU machine must fail its checks, not skip them. */
static inline int gpu_presence(char *err, size_t errlen)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e == cudaSuccess)
		return n > 0;
	if (e == cudaErrorNoDevice || (e == cudaErrorInsufficientDriver && !driver_installed()))
		return 0;
	snprintf(err, errlen, "cudaGetDeviceCount: %s: %s", cudaGetErrorName(e),
		cudaGetErrorString(e));
	return -1;
}

#endif
