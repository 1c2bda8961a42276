/* kernels/: softmax + cross-entropy + the logits gradient in one pass over each row (twin:
 * softmax_crossentropy_forward/_backward in train/layers.c); the probabilities are never
 * stored: the gradient overwrites the logits. Also the fixed-order sum of the losses. */
#include "kernels/common.cuh"

#define CE_THREADS 512

template <typename T>
__global__ void crossentropy_kernel(T *logits, float *losses, const int32_t *targets, float dloss,
	int write_grad, int V, int Vp)
{
	__shared__ float sh[32];
	int row = blockIdx.x;
	T *z = logits + (size_t)row * Vp;
	int target = targets[row];
	float zt = to_f(z[target]);
	float m = -INFINITY, sum = 0.0f;
	for (int i = threadIdx.x; i < V; i += blockDim.x) {
		float x = to_f(z[i]);
		if (x > m) {
			sum = sum * expf(m - x) + 1.0f;
			m = x;
		} else {
			sum += expf(x - m);
		}
	}
	float M = block_max(m, sh);
	float S = block_sum(m == -INFINITY ? 0.0f : sum * expf(m - M), sh);
	if (threadIdx.x == 0)
		losses[row] = logf(S) + M - zt;
	if (!write_grad)
		return;
	float inv = 1.0f / S;
	for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
		float d = 0.0f;
		if (i < V)
			d = (expf(to_f(z[i]) - M) * inv - (i == target ? 1.0f : 0.0f)) * dloss;
		z[i] = from_f<T>(d);
	}
}

extern "C" void k_crossentropy(void *logits, float *losses, const int32_t *targets, float dloss,
	int write_grad, int N, int V, int Vp, enum kdtype dt, cudaStream_t s)
{
	KDISPATCH(dt, X,
		crossentropy_kernel<X>
		<<<N, CE_THREADS, 0, s>>>((X *)logits, losses, targets, dloss, write_grad, V, Vp));
	KLAUNCH_CHECK();
}

__global__ void loss_accumulate_kernel(double *acc, const float *losses, int N)
{
	__shared__ double sh[32];
	double t = 0.0;
	for (int i = threadIdx.x; i < N; i += blockDim.x)
		t += losses[i];
	t = warp_sum_d(t);
	if ((threadIdx.x & 31) == 0)
		sh[threadIdx.x >> 5] = t;
	__syncthreads();
	if (threadIdx.x == 0) {
		double total = 0.0;
		for (int w = 0; w < (int)(blockDim.x >> 5); w++)
			total += sh[w];
		acc[0] += (double)(float)(total / N);
	}
}

extern "C" void k_loss_accumulate(double *acc, const float *losses, int N, cudaStream_t s)
{
	loss_accumulate_kernel<<<1, 1024, 0, s>>>(acc, losses, N);
	KLAUNCH_CHECK();
}
