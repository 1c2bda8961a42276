/* kernels/: GELU, tanh approximation, elementwise (twin: gelu_forward/_backward in
 * train/layers.c). The trainer's forward usually gets GELU from the matmul epilogue instead. */
#include "kernels/common.cuh"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

template <typename T> __global__ void gelu_forward_kernel(T *out, const T *inp, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x) {
		float x = to_f(inp[i]);
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		out[i] = from_f<T>(0.5f * x * (1.0f + tanhf(u)));
	}
}

template <typename T>
__global__ void gelu_backward_kernel(T *dinp, const T *inp, const T *dout, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x) {
		float x = to_f(inp[i]);
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		float th = tanhf(u);
		float sech2 = 1.0f - th * th;
		float g = 0.5f * (1.0f + th) +
			  0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
		dinp[i] = from_f<T>(g * to_f(dout[i]));
	}
}

static unsigned int grid_for(size_t n)
{
	unsigned int g = div_up(n, 256);
	return g > 65536 ? 65536 : (g ? g : 1);
}

extern "C" void k_gelu_forward(void *out, const void *inp, size_t n, enum kdtype dt, cudaStream_t s)
{
	KDISPATCH(dt, X,
		gelu_forward_kernel<X><<<grid_for(n), 256, 0, s>>>((X *)out, (const X *)inp, n));
	KLAUNCH_CHECK();
}

extern "C" void k_gelu_backward(void *dinp, const void *inp, const void *dout, size_t n,
	enum kdtype dt, cudaStream_t s)
{
	KDISPATCH(dt, X,
		gelu_backward_kernel<X>
		<<<grid_for(n), 256, 0, s>>>((X *)dinp, (const X *)inp, (const X *)dout, n));
	KLAUNCH_CHECK();
}
