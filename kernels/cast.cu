/* kernels/: dtype casts (master fp32 weights to bf16 working copies, and back for checks), and
 * the small helpers every kernel file uses (error reporting, dtype sizes). */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/common.cuh"

extern "C" size_t kdtype_bytes(enum kdtype dt)
{
	return dt == KDT_BF16 ? 2 : 4;
}

extern "C" const char *kdtype_name(enum kdtype dt)
{
	return dt == KDT_BF16 ? "bf16" : "fp32";
}

/* The first error since k_error last returned one; later ones follow from it (a failed launch
 * leaves the context unusable) and would only bury it. */
static char first_error[512];
static int have_error;

void k_error_record(const char *file, int line, const char *what, const char *msg)
{
	if (__atomic_exchange_n(&have_error, 1, __ATOMIC_ACQ_REL))
		return;
	snprintf(first_error, sizeof(first_error), "%s:%d: %s: %s", file, line, what, msg);
}

extern "C" int k_error(char *msg, size_t len)
{
	if (!__atomic_load_n(&have_error, __ATOMIC_ACQUIRE))
		return 0;
	snprintf(msg, len, "%s", first_error);
	__atomic_store_n(&have_error, 0, __ATOMIC_RELEASE);
	return 1;
}

template <typename D, typename S> __global__ void cast_kernel(D *dst, const S *src, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x)
		dst[i] = from_f<D>(to_f(src[i]));
}

extern "C" void k_cast(void *dst, enum kdtype dst_dt, const void *src, enum kdtype src_dt, size_t n,
	cudaStream_t s)
{
	if (n == 0)
		return;
	if (dst_dt == src_dt) {
		K_CHECK(cudaMemcpyAsync(dst, src, n * kdtype_bytes(dst_dt),
			cudaMemcpyDeviceToDevice, s));
		return;
	}
	unsigned int grid = div_up(n, 256);
	if (grid > 65536)
		grid = 65536;
	if (dst_dt == KDT_BF16)
		cast_kernel<<<grid, 256, 0, s>>>((bf16 *)dst, (const float *)src, n);
	else
		cast_kernel<<<grid, 256, 0, s>>>((float *)dst, (const bf16 *)src, n);
	KLAUNCH_CHECK();
}
