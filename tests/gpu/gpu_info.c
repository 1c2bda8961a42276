/* tests/gpu/gpu_info: what train_gpu.sh asks the CUDA runtime before any check: the runtime and
 * driver versions, and each device's name (the MFU peak is taken from it), compute capability,
 * SM count and memory, one "key: value" line each. Exits 0 with a device, 77 without a GPU, 1
 * when there is a driver the runtime cannot use (gpu_presence). */
#include "tests/gpu/gpu_test.h"

/* CUDA's version numbers: 1000 * major + 10 * minor. */
static void print_version(const char *what, int v)
{
	if (v)
		printf("%s: %d.%d\n", what, v / 1000, v % 1000 / 10);
	else
		printf("%s: none\n", what);
}

int main(void)
{
	char err[256];
	int runtime = 0, driver = 0, n = 0;
	cudaRuntimeGetVersion(&runtime);
	cudaDriverGetVersion(&driver); /* 0 without a driver */
	print_version("cuda runtime", runtime);
	print_version("cuda driver (highest runtime it supports)", driver);
	int r = gpu_presence(err, sizeof(err));
	if (r < 0) {
		printf("error: %s\n", err);
		return 1;
	}
	if (r == 0) {
		printf("devices: 0\n");
		return 77;
	}
	cudaGetDeviceCount(&n);
	printf("devices: %d\n", n);
	for (int i = 0; i < n; i++) {
		struct cudaDeviceProp p;
		cudaError_t e = cudaGetDeviceProperties(&p, i);
		if (e != cudaSuccess) {
			printf("error: device %d: %s\n", i, cudaGetErrorString(e));
			return 1;
		}
		printf("device %d: %s\n", i, p.name);
		printf("device %d compute capability: %d.%d\n", i, p.major, p.minor);
		printf("device %d SMs: %d\n", i, p.multiProcessorCount);
		printf("device %d memory: %.1f GiB\n", i, p.totalGlobalMem / 1073741824.0);
	}
	return 0;
}
