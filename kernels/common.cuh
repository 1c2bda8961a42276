/* kernels/: what every kernel file shares: fp32/bf16 loads and stores, warp and block
 * reductions, and the dispatch from enum kdtype to a template instance. Private to kernels/. */
#ifndef FERRY_KERNELS_COMMON_CUH
#define FERRY_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/kernels.h"

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x)
{
	return x;
}
__device__ __forceinline__ float to_f(bf16 x)
{
	return __bfloat162float(x);
}
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x)
{
	return x;
}
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x)
{
	return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
__device__ __forceinline__ double warp_sum_d(double v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Sum over a block of up to 1024 threads; every thread gets the result. The order is fixed by
 * the block shape, so results repeat bit for bit. */
__device__ __forceinline__ float block_sum(float v, float *shared32)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
	v = warp_sum(v);
	__syncthreads();
	if (lane == 0)
		shared32[warp] = v;
	__syncthreads();
	v = lane < nw ? shared32[lane] : 0.0f;
	return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *shared32)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
	v = warp_max(v);
	__syncthreads();
	if (lane == 0)
		shared32[warp] = v;
	__syncthreads();
	v = lane < nw ? shared32[lane] : -INFINITY;
	return warp_max(v);
}

#define KDISPATCH(dt, T, ...)                                                                      \
	do {                                                                                       \
		if ((dt) == KDT_BF16) {                                                            \
			typedef bf16 T;                                                            \
			__VA_ARGS__;                                                               \
		} else {                                                                           \
			typedef float T;                                                           \
			__VA_ARGS__;                                                               \
		}                                                                                  \
	} while (0)

/* kernels.h's k_error: the first failure is kept for the caller, nothing exits. */
void k_error_record(const char *file, int line, const char *what, const char *msg);
#define K_CHECK(x)                                                                                 \
	do {                                                                                       \
		cudaError_t e_ = (x);                                                              \
		if (e_ != cudaSuccess) {                                                           \
			k_error_record(__FILE__, __LINE__, #x, cudaGetErrorString(e_));            \
			return;                                                                    \
		}                                                                                  \
	} while (0)
#define KLAUNCH_CHECK() K_CHECK(cudaGetLastError())

/* Runs the statement list with the compile-time constant HS set to the head size hs (16, 32,
 * 64 or 128: the sizes the attention kernels are built for); any other hs is a recorded error
 * and the calling function returns. */
#define HEAD_SIZE_SWITCH(hs, HS, ...)                                                              \
	switch (hs) {                                                                              \
	case 16: {                                                                                 \
		constexpr int HS = 16;                                                             \
		__VA_ARGS__;                                                                       \
		break;                                                                             \
	}                                                                                          \
	case 32: {                                                                                 \
		constexpr int HS = 32;                                                             \
		__VA_ARGS__;                                                                       \
		break;                                                                             \
	}                                                                                          \
	case 64: {                                                                                 \
		constexpr int HS = 64;                                                             \
		__VA_ARGS__;                                                                       \
		break;                                                                             \
	}                                                                                          \
	case 128: {                                                                                \
		constexpr int HS = 128;                                                            \
		__VA_ARGS__;                                                                       \
		break;                                                                             \
	}                                                                                          \
	default:                                                                                   \
		k_error_record(__FILE__, __LINE__, "attention",                                    \
			"head size not 16, 32, 64 or 128");                                        \
		return;                                                                            \
	}

/* delta (B,NH,T) = rowsum(dout * out) per head, the softmax backward's row term; both attention
 * backwards start with it (attention.cu). */
void attention_delta(float *delta, const void *dout, const void *out, int B, int T, int C, int NH,
	enum kdtype dt, cudaStream_t s);

static inline unsigned int div_up(size_t a, size_t b)
{
	return (unsigned int)((a + b - 1) / b);
}

#endif
