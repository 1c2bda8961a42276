/* kernels/: layernorm, with the residual add fused into it, and the column sums for bias
 * gradients, and the bias add after a row-parallel matmul's all-reduce (twins:
 * layernorm_forward/_backward, residual_forward/_backward in train/layers.c, add_bias in
 * train/model.c).
 * One warp per row; weight and bias gradients in two passes (per row-chunk partial sums, then
 * a fixed-order sum over chunks) instead of atomics, so they repeat bit for bit. */
#include "kernels/common.cuh"

#define LN_ROWS_PER_BLOCK 8
#define COLSUM_ROWS       128 /* rows per partial sum in the weight/bias gradient pass */

template <typename T, bool RESIDUAL>
__global__ void layernorm_forward_kernel(T *residual, T *out, float *mean, float *rstd, const T *a,
	const T *b, const T *weight, const T *bias, int N, int C)
{
	int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
	int lane = threadIdx.x & 31;
	if (row >= N)
		return;
	size_t off = (size_t)row * C;
	const T *x = a + off;
	if (RESIDUAL) {
		for (int c = lane; c < C; c += 32)
			residual[off + c] = from_f<T>(to_f(a[off + c]) + to_f(b[off + c]));
		__syncwarp();
		x = residual + off;
	}
	float sum = 0.0f;
	for (int c = lane; c < C; c += 32)
		sum += to_f(x[c]);
	float m = warp_sum(sum) / C;
	float var = 0.0f;
	for (int c = lane; c < C; c += 32) {
		float d = to_f(x[c]) - m;
		var += d * d;
	}
	float s = 1.0f / sqrtf(warp_sum(var) / C + 1e-5f);
	for (int c = lane; c < C; c += 32)
		out[off + c] = from_f<T>((to_f(x[c]) - m) * s * to_f(weight[c]) + to_f(bias[c]));
	if (lane == 0) {
		mean[row] = m;
		rstd[row] = s;
	}
}

extern "C" void k_layernorm_forward(void *out, float *mean, float *rstd, const void *inp,
	const void *weight, const void *bias, int N, int C, enum kdtype dt, cudaStream_t s)
{
	unsigned int grid = div_up(N, LN_ROWS_PER_BLOCK);
	KDISPATCH(dt, X,
		layernorm_forward_kernel<X, false>
		<<<grid, 32 * LN_ROWS_PER_BLOCK, 0, s>>>(NULL, (X *)out, mean, rstd, (const X *)inp,
			NULL, (const X *)weight, (const X *)bias, N, C));
	KLAUNCH_CHECK();
}

extern "C" void k_residual_layernorm_forward(void *residual, void *out, float *mean, float *rstd,
	const void *a, const void *b, const void *weight, const void *bias, int N, int C,
	enum kdtype dt, cudaStream_t s)
{
	unsigned int grid = div_up(N, LN_ROWS_PER_BLOCK);
	KDISPATCH(dt, X,
		layernorm_forward_kernel<X, true>
		<<<grid, 32 * LN_ROWS_PER_BLOCK, 0, s>>>((X *)residual, (X *)out, mean, rstd,
			(const X *)a, (const X *)b, (const X *)weight, (const X *)bias, N, C));
	KLAUNCH_CHECK();
}

template <typename T>
__global__ void layernorm_backward_dinp_kernel(T *dinp, const T *dout, const T *inp,
	const T *weight, const float *mean, const float *rstd, int N, int C)
{
	int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
	int lane = threadIdx.x & 31;
	if (row >= N)
		return;
	size_t off = (size_t)row * C;
	float m = mean[row], s = rstd[row];
	float dm = 0.0f, dnm = 0.0f;
	for (int c = lane; c < C; c += 32) {
		float dnorm = to_f(dout[off + c]) * to_f(weight[c]);
		dm += dnorm;
		dnm += dnorm * (to_f(inp[off + c]) - m) * s;
	}
	dm = warp_sum(dm) / C;
	dnm = warp_sum(dnm) / C;
	for (int c = lane; c < C; c += 32) {
		float norm = (to_f(inp[off + c]) - m) * s;
		float dnorm = to_f(dout[off + c]) * to_f(weight[c]);
		dinp[off + c] = from_f<T>(to_f(dinp[off + c]) + s * (dnorm - dm - norm * dnm));
	}
}

/* Partial column sums over chunks of COLSUM_ROWS rows: part[chunk][c] of dout, and with inp
 * also part2[chunk][c] of dout * normalised inp. Block (32, 8): 32 columns, 8 row lanes. */
template <typename T, bool NORM>
__global__ void colsum_partial_kernel(float *part, float *part2, const T *dout, const T *inp,
	const float *mean, const float *rstd, int N, int C)
{
	__shared__ float sh[8][33], sh2[8][33];
	int c = blockIdx.x * 32 + threadIdx.x;
	int r0 = blockIdx.y * COLSUM_ROWS, r1 = min(N, r0 + COLSUM_ROWS);
	float acc = 0.0f, acc2 = 0.0f;
	if (c < C) {
		for (int r = r0 + threadIdx.y; r < r1; r += 8) {
			float d = to_f(dout[(size_t)r * C + c]);
			acc += d;
			if (NORM)
				acc2 += d * (to_f(inp[(size_t)r * C + c]) - mean[r]) * rstd[r];
		}
	}
	sh[threadIdx.y][threadIdx.x] = acc;
	sh2[threadIdx.y][threadIdx.x] = acc2;
	__syncthreads();
	if (threadIdx.y == 0 && c < C) {
		float t = 0.0f, t2 = 0.0f;
		for (int y = 0; y < 8; y++) {
			t += sh[y][threadIdx.x];
			t2 += sh2[y][threadIdx.x];
		}
		part[(size_t)blockIdx.y * C + c] = t;
		if (NORM)
			part2[(size_t)blockIdx.y * C + c] = t2;
	}
}

__global__ void colsum_final_kernel(float *out, float *out2, const float *part, const float *part2,
	int nr_chunks, int C)
{
	int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= C)
		return;
	float t = 0.0f, t2 = 0.0f;
	for (int k = 0; k < nr_chunks; k++) {
		t += part[(size_t)k * C + c];
		if (out2)
			t2 += part2[(size_t)k * C + c];
	}
	out[c] += t;
	if (out2)
		out2[c] += t2;
}

static int nr_chunks(int N)
{
	return (N + COLSUM_ROWS - 1) / COLSUM_ROWS;
}

extern "C" size_t k_layernorm_backward_scratch_floats(int N, int C)
{
	return 2 * (size_t)nr_chunks(N) * C;
}

extern "C" size_t k_bias_backward_scratch_floats(int N, int OC)
{
	return (size_t)nr_chunks(N) * OC;
}

extern "C" void k_layernorm_backward(void *dinp, float *dweight, float *dbias, const void *dout,
	const void *inp, const void *weight, const float *mean, const float *rstd, float *scratch,
	int N, int C, enum kdtype dt, cudaStream_t s)
{
	int R = nr_chunks(N);
	dim3 grid(div_up(C, 32), R), block(32, 8);
	float *part = scratch, *part2 = scratch + (size_t)R * C;
	KDISPATCH(dt, X, {
		layernorm_backward_dinp_kernel<X>
			<<<div_up(N, LN_ROWS_PER_BLOCK), 32 * LN_ROWS_PER_BLOCK, 0, s>>>((X *)dinp,
				(const X *)dout, (const X *)inp, (const X *)weight, mean, rstd, N,
				C);
		colsum_partial_kernel<X, true><<<grid, block, 0, s>>>(part, part2, (const X *)dout,
			(const X *)inp, mean, rstd, N, C);
	});
	KLAUNCH_CHECK();
	colsum_final_kernel<<<div_up(C, 256), 256, 0, s>>>(dbias, dweight, part, part2, R, C);
	KLAUNCH_CHECK();
}

extern "C" void k_bias_backward(float *dbias, const void *dout, float *scratch, int N, int OC,
	enum kdtype dt, cudaStream_t s)
{
	int R = nr_chunks(N);
	dim3 grid(div_up(OC, 32), R), block(32, 8);
	KDISPATCH(dt, X,
		colsum_partial_kernel<X, false>
		<<<grid, block, 0, s>>>(scratch, NULL, (const X *)dout, NULL, NULL, NULL, N, OC));
	KLAUNCH_CHECK();
	colsum_final_kernel<<<div_up(OC, 256), 256, 0, s>>>(dbias, NULL, scratch, NULL, R, OC);
	KLAUNCH_CHECK();
}

template <typename T> __global__ void add_bias_kernel(T *out, const T *bias, size_t n, int OC)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x)
		out[i] = from_f<T>(to_f(out[i]) + to_f(bias[i % OC]));
}

extern "C" void k_add_bias(void *out, const void *bias, int N, int OC, enum kdtype dt,
	cudaStream_t s)
{
	size_t n = (size_t)N * OC;
	unsigned int grid = div_up(n, 256);
	if (grid > 65536)
		grid = 65536;
	KDISPATCH(dt, X,
		add_bias_kernel<X>
		<<<grid ? grid : 1, 256, 0, s>>>((X *)out, (const X *)bias, n, OC));
	KLAUNCH_CHECK();
}
