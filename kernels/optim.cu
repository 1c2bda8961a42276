/* kernels/: the optimizer step: the global gradient norm (fixed-order two-pass reduction in
 * double) with the clipping factor computed on the device, and fused AdamW that also writes the
 * bf16 working copy of the weights (twins: gpt2_grad_norm and gpt2_update in train/model.c). */
#include "kernels/common.cuh"

__global__ void norm_partial_kernel(double *part, const float *g, size_t n)
{
	__shared__ double sh[32];
	double t = 0.0;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x)
		t += (double)g[i] * g[i];
	t = warp_sum_d(t);
	if ((threadIdx.x & 31) == 0)
		sh[threadIdx.x >> 5] = t;
	__syncthreads();
	if (threadIdx.x == 0) {
		double total = 0.0;
		for (int w = 0; w < (int)(blockDim.x >> 5); w++)
			total += sh[w];
		part[blockIdx.x] = total;
	}
}

__global__ void norm_final_kernel(float *out, const double *part, int nr, float clip, int world)
{
	double total = 0.0;
	for (int i = 0; i < nr; i++)
		total += part[i];
	float norm = (float)sqrt(total) / (float)world;
	float scale = clip > 0.0f && norm > clip ? clip / norm : 1.0f;
	out[0] = norm;
	out[1] = scale / (float)world;
}

extern "C" void k_global_norm(float *out, const float *g, size_t n, float clip, int world,
	double *scratch, cudaStream_t s)
{
	norm_partial_kernel<<<K_NORM_BLOCKS, 256, 0, s>>>(scratch, g, n);
	KLAUNCH_CHECK();
	norm_final_kernel<<<1, 1, 0, s>>>(out, scratch, K_NORM_BLOCKS, clip, world);
	KLAUNCH_CHECK();
}

__global__ void sumsq_final_kernel(float *out, const double *part, int nr)
{
	double total = 0.0;
	for (int i = 0; i < nr; i++)
		total += part[i];
	out[0] = (float)total;
}

extern "C" void k_sum_squares(float *out, const float *x, size_t n, double *scratch, cudaStream_t s)
{
	norm_partial_kernel<<<K_NORM_BLOCKS, 256, 0, s>>>(scratch, x, n);
	KLAUNCH_CHECK();
	sumsq_final_kernel<<<1, 1, 0, s>>>(out, scratch, K_NORM_BLOCKS);
	KLAUNCH_CHECK();
}

extern "C" void k_sum_squares_ranges(float *out, const float *x, const size_t *offs,
	const size_t *lens, int nr, double *scratch, cudaStream_t s)
{
	for (int r = 0; r < nr; r++) {
		norm_partial_kernel<<<K_NORM_BLOCKS, 256, 0, s>>>(scratch +
									  (size_t)r * K_NORM_BLOCKS,
			x + offs[r], lens[r]);
		KLAUNCH_CHECK();
	}
	sumsq_final_kernel<<<1, 1, 0, s>>>(out, scratch, nr * K_NORM_BLOCKS);
	KLAUNCH_CHECK();
}

__global__ void norm_from_sumsq_kernel(float *out, const float *sumsq, float clip, int world)
{
	float norm = sqrtf(sumsq[0]) / (float)world;
	float scale = clip > 0.0f && norm > clip ? clip / norm : 1.0f;
	out[0] = norm;
	out[1] = scale / (float)world;
}

extern "C" void k_norm_from_sumsq(float *out, const float *sumsq, float clip, int world,
	cudaStream_t s)
{
	norm_from_sumsq_kernel<<<1, 1, 0, s>>>(out, sumsq, clip, world);
	KLAUNCH_CHECK();
}

template <typename T>
__global__ void adamw_kernel(float *master, T *params, const float *grads, float *mm, float *vv,
	size_t n, const float *hp, const float *grad_scale, float b1, float b2, float eps, float wd)
{
	float lr = hp[0], c1 = hp[1], c2 = hp[2], gs = *grad_scale;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x) {
		float grad = grads[i] * gs;
		float mi = b1 * mm[i] + (1.0f - b1) * grad;
		float vi = b2 * vv[i] + (1.0f - b2) * grad * grad;
		mm[i] = mi;
		vv[i] = vi;
		float mhat = mi / c1, vhat = vi / c2;
		float p = master[i];
		p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
		master[i] = p;
		if (params)
			params[i] = from_f<T>(p);
	}
}

extern "C" void k_adamw(float *master, void *params, enum kdtype params_dt, const float *grads,
	float *m, float *v, size_t n, const float *hp, const float *grad_scale, float beta1,
	float beta2, float eps, float weight_decay, cudaStream_t s)
{
	if (n == 0)
		return;
	unsigned int grid = div_up(n, 256);
	if (grid > 65536)
		grid = 65536;
	KDISPATCH(params_dt, X,
		adamw_kernel<X><<<grid, 256, 0, s>>>(master, (X *)params, grads, m, v, n, hp,
			grad_scale, beta1, beta2, eps, weight_decay));
	KLAUNCH_CHECK();
}
