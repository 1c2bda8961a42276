/* tests/gpu/: what the GPU test programs share: SKIP (77) without a GPU, FAIL with a GPU the
 * runtime cannot use, random inputs, moving fp32 host data to and from dt-typed device tensors,
 * and one table row per check. */
#ifndef FERRY_TESTS_GPU_TEST_H
#define FERRY_TESTS_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels/kernels.h"
#include "tests/gpu/gpu_presence.h"

static int nr_failed;

/* A CUDA call of the test itself that failed: one line, exit 1. */
#define CUDA_CHECK(x)                                                                              \
	do {                                                                                       \
		cudaError_t e_ = (x);                                                              \
		if (e_ != cudaSuccess) {                                                           \
			printf("FAIL: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,                    \
				cudaGetErrorString(e_));                                           \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static inline void skip_without_gpu(const char *prog)
{
	char err[256];
	int r = gpu_presence(err, sizeof(err));
	if (r < 0) {
		printf("%s: FAIL: %s\n", prog, err);
		exit(1);
	}
	if (r == 0) {
		printf("%s: SKIP: no CUDA device\n", prog);
		exit(77);
	}
}

static inline float urand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return (float)((x * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f * 2.0f - 1.0f;
}

static inline float *hrand(size_t n, float scale, uint64_t *s)
{
	float *p = malloc(n * sizeof(float) + 16);
	for (size_t i = 0; i < n; i++)
		p[i] = urand(s) * scale;
	return p;
}

static inline float *hzero(size_t n)
{
	return calloc(n + 4, sizeof(float));
}

/* A dt tensor holding host (n); host is rounded to dt in place, so the CPU twin sees exactly
 * what the kernel sees. */
static inline void *dev_from(float *host, size_t n, enum kdtype dt)
{
	float *tmp;
	void *d;
	CUDA_CHECK(cudaMalloc((void **)&tmp, n * 4 + 16));
	CUDA_CHECK(cudaMalloc(&d, n * kdtype_bytes(dt) + 16));
	CUDA_CHECK(cudaMemcpy(tmp, host, n * 4, cudaMemcpyHostToDevice));
	k_cast(d, dt, tmp, KDT_F32, n, 0);
	k_cast(tmp, KDT_F32, d, dt, n, 0);
	CUDA_CHECK(cudaMemcpy(host, tmp, n * 4, cudaMemcpyDeviceToHost));
	CUDA_CHECK(cudaFree(tmp));
	return d;
}

static inline void dev_to(float *host, const void *d, size_t n, enum kdtype dt)
{
	float *tmp;
	CUDA_CHECK(cudaMalloc((void **)&tmp, n * 4 + 16));
	k_cast(tmp, KDT_F32, d, dt, n, 0);
	CUDA_CHECK(cudaMemcpy(host, tmp, n * 4, cudaMemcpyDeviceToHost));
	CUDA_CHECK(cudaFree(tmp));
}

/* Largest |gpu - cpu| over the largest |cpu|: an error relative to the tensor's scale. */
static inline double rel_err(const float *gpu, const float *cpu, size_t n)
{
	double maxd = 0.0, maxr = 1e-30;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)gpu[i] - cpu[i]);
		if (!(d <= maxd)) /* NaN counts as failure */
			maxd = isnan(d) ? INFINITY : d;
		if (fabs(cpu[i]) > maxr)
			maxr = fabs(cpu[i]);
	}
	return maxd / maxr;
}

static inline void report(const char *what, const char *dt, double err, double tol)
{
	int ok = err <= tol;
	printf("| %-34s | %-4s | %10.3e | %8.1e | %s |\n", what, dt, err, tol,
		ok ? "PASS" : "FAIL");
	if (!ok)
		nr_failed++;
}

/* The error the kernels kept (k_error), as a failed row: a kernel that did not run. */
static inline void report_kernel_errors(void)
{
	char msg[512];
	if (k_error(msg, sizeof(msg))) {
		printf("| %-34s | FAIL: %s\n", "kernel errors (k_error)", msg);
		nr_failed++;
	}
}

static inline void table_header(void)
{
	printf("| %-34s | %-4s | %10s | %8s | %s |\n", "check", "type", "rel. error", "limit",
		"result");
}

#endif
