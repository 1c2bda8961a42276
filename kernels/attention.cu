/* kernels/: causal multi-head attention without the (T,T) matrix (twin: attention_forward/
 * _backward in train/layers.c, which keeps it). Flash-style: each warp owns one query (or, in
 * backward, one key) row; 32-row tiles of the other side are staged in shared memory and every
 * lane scores one row of the tile, with an online softmax. Forward saves the log-sum-exp of
 * each row; backward recomputes the probabilities from it, in two kernels (dq; dk and dv) so
 * that no gradient needs atomics and results repeat bit for bit. */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/common.cuh"

#define AW   8 /* warps (rows) per block */
#define TILE 32

template <int HS> struct hs_traits {
	static constexpr int R = (HS + 31) / 32; /* dims per lane */
	static constexpr int P = HS + 1;         /* padded shared row: conflict-free lane rows */
};

template <typename T, int HS>
__global__ void __launch_bounds__(AW * 32) attention_forward_kernel(T *out, float *lse,
	const T *qkv, int T_, int C, int NH, float scale)
{
	constexpr int R = hs_traits<HS>::R, P = hs_traits<HS>::P;
	__shared__ float Ks[TILE][P], Vs[TILE][P], Qs[AW][HS];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int q0 = blockIdx.x * AW, i = q0 + w;
	size_t C3 = 3 * (size_t)C;
	const T *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	if (i < T_)
		for (int d = lane; d < HS; d += 32)
			Qs[w][d] = to_f(base[(size_t)i * C3 + d]);
	float m = -INFINITY, l = 0.0f, acc[R];
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	int last = min(q0 + AW - 1, T_ - 1);
	for (int j0 = 0; j0 <= last; j0 += TILE) {
		__syncthreads();
		for (int idx = threadIdx.x; idx < TILE * HS; idx += AW * 32) {
			int r = idx / HS, d = idx % HS, j = j0 + r;
			Ks[r][d] = j < T_ ? to_f(base[(size_t)j * C3 + C + d]) : 0.0f;
			Vs[r][d] = j < T_ ? to_f(base[(size_t)j * C3 + 2 * C + d]) : 0.0f;
		}
		__syncthreads();
		if (i >= T_ || j0 > i)
			continue;
		int j = j0 + lane;
		float sc = -INFINITY;
		if (j <= i) {
			float dot = 0.0f;
			for (int d = 0; d < HS; d++)
				dot += Qs[w][d] * Ks[lane][d];
			sc = dot * scale;
		}
		float m_new = fmaxf(m, warp_max(sc));
		float p = j <= i ? expf(sc - m_new) : 0.0f;
		float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
		l = l * corr + warp_sum(p);
		for (int r = 0; r < R; r++)
			acc[r] *= corr;
		for (int jj = 0; jj < TILE; jj++) {
			float pj = __shfl_sync(0xffffffffu, p, jj);
			for (int r = 0; r < R; r++) {
				int d = lane + 32 * r;
				if (d < HS)
					acc[r] += pj * Vs[jj][d];
			}
		}
		m = m_new;
	}
	if (i >= T_)
		return;
	float inv = 1.0f / l;
	T *o = out + ((size_t)b * T_ + i) * C + (size_t)h * HS;
	for (int r = 0; r < R; r++) {
		int d = lane + 32 * r;
		if (d < HS)
			o[d] = from_f<T>(acc[r] * inv);
	}
	if (lane == 0)
		lse[(size_t)bh * T_ + i] = m + logf(l);
}

/* delta (B,NH,T) = sum over the head's dims of dout * out: the softmax backward's row term. */
template <typename T>
__global__ void attention_delta_kernel(float *delta, const T *dout, const T *out, int B, int T_,
	int C, int NH)
{
	int row = blockIdx.x * AW + (threadIdx.x >> 5), lane = threadIdx.x & 31;
	if (row >= B * NH * T_)
		return;
	int HS = C / NH;
	int i = row % T_, bh = row / T_, b = bh / NH, h = bh % NH;
	size_t off = ((size_t)b * T_ + i) * C + (size_t)h * HS;
	float t = 0.0f;
	for (int d = lane; d < HS; d += 32)
		t += to_f(dout[off + d]) * to_f(out[off + d]);
	t = warp_sum(t);
	if (lane == 0)
		delta[row] = t;
}

template <typename T, int HS>
__global__ void __launch_bounds__(AW * 32) attention_dq_kernel(T *dqkv, const T *dout, const T *qkv,
	const float *lse, const float *delta, int T_, int C, int NH, float scale)
{
	constexpr int R = hs_traits<HS>::R, P = hs_traits<HS>::P;
	__shared__ float Ks[TILE][P], Vs[TILE][P], Qs[AW][HS], dOs[AW][HS];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int q0 = blockIdx.x * AW, i = q0 + w;
	size_t C3 = 3 * (size_t)C;
	const T *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	const T *dob = dout + (size_t)b * T_ * C + (size_t)h * HS;
	float L = 0.0f, D = 0.0f;
	if (i < T_) {
		for (int d = lane; d < HS; d += 32) {
			Qs[w][d] = to_f(base[(size_t)i * C3 + d]);
			dOs[w][d] = to_f(dob[(size_t)i * C + d]);
		}
		L = lse[(size_t)bh * T_ + i];
		D = delta[(size_t)bh * T_ + i];
	}
	float acc[R];
	for (int r = 0; r < R; r++)
		acc[r] = 0.0f;
	int last = min(q0 + AW - 1, T_ - 1);
	for (int j0 = 0; j0 <= last; j0 += TILE) {
		__syncthreads();
		for (int idx = threadIdx.x; idx < TILE * HS; idx += AW * 32) {
			int r = idx / HS, d = idx % HS, j = j0 + r;
			Ks[r][d] = j < T_ ? to_f(base[(size_t)j * C3 + C + d]) : 0.0f;
			Vs[r][d] = j < T_ ? to_f(base[(size_t)j * C3 + 2 * C + d]) : 0.0f;
		}
		__syncthreads();
		if (i >= T_ || j0 > i)
			continue;
		int j = j0 + lane;
		float ds = 0.0f;
		if (j <= i) {
			float dot = 0.0f, dp = 0.0f;
			for (int d = 0; d < HS; d++) {
				dot += Qs[w][d] * Ks[lane][d];
				dp += dOs[w][d] * Vs[lane][d];
			}
			float p = expf(dot * scale - L);
			ds = p * (dp - D);
		}
		for (int jj = 0; jj < TILE; jj++) {
			float dsj = __shfl_sync(0xffffffffu, ds, jj);
			for (int r = 0; r < R; r++) {
				int d = lane + 32 * r;
				if (d < HS)
					acc[r] += dsj * Ks[jj][d];
			}
		}
	}
	if (i >= T_)
		return;
	T *dq = dqkv + ((size_t)b * T_ + i) * C3 + (size_t)h * HS;
	for (int r = 0; r < R; r++) {
		int d = lane + 32 * r;
		if (d < HS)
			dq[d] = from_f<T>(acc[r] * scale);
	}
}

template <typename T, int HS>
__global__ void __launch_bounds__(AW * 32) attention_dkv_kernel(T *dqkv, const T *dout,
	const T *qkv, const float *lse, const float *delta, int T_, int C, int NH, float scale)
{
	constexpr int R = hs_traits<HS>::R, P = hs_traits<HS>::P;
	__shared__ float Qs[TILE][P], dOs[TILE][P], Kw[AW][HS], Vw[AW][HS], Ls[TILE], Ds[TILE];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int k0 = blockIdx.x * AW, j = k0 + w;
	size_t C3 = 3 * (size_t)C;
	const T *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	const T *dob = dout + (size_t)b * T_ * C + (size_t)h * HS;
	if (j < T_)
		for (int d = lane; d < HS; d += 32) {
			Kw[w][d] = to_f(base[(size_t)j * C3 + C + d]);
			Vw[w][d] = to_f(base[(size_t)j * C3 + 2 * C + d]);
		}
	float acck[R], accv[R];
	for (int r = 0; r < R; r++)
		acck[r] = accv[r] = 0.0f;
	for (int i0 = k0; i0 < T_; i0 += TILE) {
		__syncthreads();
		for (int idx = threadIdx.x; idx < TILE * HS; idx += AW * 32) {
			int r = idx / HS, d = idx % HS, i = i0 + r;
			Qs[r][d] = i < T_ ? to_f(base[(size_t)i * C3 + d]) : 0.0f;
			dOs[r][d] = i < T_ ? to_f(dob[(size_t)i * C + d]) : 0.0f;
		}
		if (threadIdx.x < TILE) {
			int i = i0 + threadIdx.x;
			Ls[threadIdx.x] = i < T_ ? lse[(size_t)bh * T_ + i] : 0.0f;
			Ds[threadIdx.x] = i < T_ ? delta[(size_t)bh * T_ + i] : 0.0f;
		}
		__syncthreads();
		if (j >= T_)
			continue;
		int i = i0 + lane;
		float p = 0.0f, ds = 0.0f;
		if (i < T_ && i >= j) {
			float dot = 0.0f, dp = 0.0f;
			for (int d = 0; d < HS; d++) {
				dot += Qs[lane][d] * Kw[w][d];
				dp += dOs[lane][d] * Vw[w][d];
			}
			p = expf(dot * scale - Ls[lane]);
			ds = p * (dp - Ds[lane]);
		}
		for (int ii = 0; ii < TILE; ii++) {
			float pi = __shfl_sync(0xffffffffu, p, ii);
			float dsi = __shfl_sync(0xffffffffu, ds, ii);
			for (int r = 0; r < R; r++) {
				int d = lane + 32 * r;
				if (d < HS) {
					accv[r] += pi * dOs[ii][d];
					acck[r] += dsi * Qs[ii][d];
				}
			}
		}
	}
	if (j >= T_)
		return;
	T *dk = dqkv + ((size_t)b * T_ + j) * C3 + C + (size_t)h * HS;
	T *dv = dk + C;
	for (int r = 0; r < R; r++) {
		int d = lane + 32 * r;
		if (d < HS) {
			dk[d] = from_f<T>(acck[r] * scale);
			dv[d] = from_f<T>(accv[r]);
		}
	}
}

extern "C" int k_attention_supported(int C, int NH)
{
	if (NH <= 0 || C % NH)
		return 0;
	int hs = C / NH;
	return hs == 16 || hs == 32 || hs == 64 || hs == 128;
}

extern "C" void k_attention_forward(void *out, float *lse, const void *qkv, int B, int T, int C,
	int NH, enum kdtype dt, cudaStream_t s)
{
	int hs = C / NH;
	float scale = 1.0f / sqrtf((float)hs);
	dim3 grid(div_up(T, AW), B * NH);
	KDISPATCH(dt, X,
		HEAD_SIZE_SWITCH(hs, HS,
			attention_forward_kernel<X, HS>
			<<<grid, AW * 32, 0, s>>>((X *)out, lse, (const X *)qkv, T, C, NH, scale)));
	KLAUNCH_CHECK();
}

void attention_delta(float *delta, const void *dout, const void *out, int B, int T, int C, int NH,
	enum kdtype dt, cudaStream_t s)
{
	KDISPATCH(dt, X,
		attention_delta_kernel<X><<<div_up((size_t)B * NH * T, AW), AW * 32, 0, s>>>(delta,
			(const X *)dout, (const X *)out, B, T, C, NH));
}

extern "C" void k_attention_backward(void *dqkv, float *delta, const void *dout, const void *qkv,
	const void *out, const float *lse, int B, int T, int C, int NH, enum kdtype dt,
	cudaStream_t s)
{
	int hs = C / NH;
	float scale = 1.0f / sqrtf((float)hs);
	dim3 grid(div_up(T, AW), B * NH);
	attention_delta(delta, dout, out, B, T, C, NH, dt, s);
	KDISPATCH(dt, X, {
		HEAD_SIZE_SWITCH(hs, HS, {
			attention_dq_kernel<X, HS><<<grid, AW * 32, 0, s>>>((X *)dqkv,
				(const X *)dout, (const X *)qkv, lse, delta, T, C, NH, scale);
			attention_dkv_kernel<X, HS><<<grid, AW * 32, 0, s>>>((X *)dqkv,
				(const X *)dout, (const X *)qkv, lse, delta, T, C, NH, scale);
		});
	});
	KLAUNCH_CHECK();
}
