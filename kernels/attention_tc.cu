/* kernels/: causal attention forward on tensor cores (bf16 in, fp32 accumulate, mma.sync
 * m16n8k16; sm_80 and newer). The same contract as k_attention_forward, whose fp32 CUDA-core
 * kernel (attention.cu) stays the reference it is tested against, with the CPU twin; its
 * backward uses this kernel's log-sum-exp as it is.
 *
 * A block of 4 warps owns 64 query rows of one (batch, head), each warp 16 of them, held as
 * mma A fragments in registers for the whole loop. Key and value tiles of 64 rows are staged in
 * shared memory; per tile a warp computes S = Q K^T (16 x 64, fp32 in registers), masks and
 * scales it, updates its online softmax (max and sum per row, shared by the 4 lanes of a row
 * through two shuffles), and adds P V with P rounded to bf16 straight from the S registers: the
 * accumulator layout of S is the A layout P needs. Every sum has a fixed order. */
#include <stdint.h>

#include "kernels/common.cuh"

#define TC_WARPS 4
#define TC_BQ    (16 * TC_WARPS) /* query rows per block */
#define TC_BK    64              /* key rows per tile */
#define TC_PAD   8               /* bf16 of padding per shared row: conflict-free fragment loads */

/* d (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment) */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(bf16 lo, bf16 hi)
{
	__nv_bfloat162 v = __halves2bfloat162(lo, hi);
	return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t pack_f32(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *reinterpret_cast<uint32_t *>(&v);
}

/* Two adjacent bf16 (a 4-byte aligned pair) as one register. */
__device__ __forceinline__ uint32_t load_pair(const bf16 *p)
{
	return *reinterpret_cast<const uint32_t *>(p);
}

/* Fragment coordinates (PTX ISA, mma.m16n8k16): lane = 4 g + t; A registers 0..3 hold rows
 * g, g+8, g, g+8 at columns 2t (+1), 2t, 2t+8, 2t+8; B registers 0, 1 hold rows 2t (+1) and
 * 2t+8 (+1) of column g; accumulators 0, 1 row g and 2, 3 row g+8, columns 2t and 2t+1. */
template <int HS> struct tc {
	static constexpr int KF = HS / 16;   /* A fragments along the head dims */
	static constexpr int NS = TC_BK / 8; /* score tiles (8 columns) per 64-row tile */
	static constexpr int NO = HS / 8;    /* output tiles (8 dims) */
};

/* The A fragments of the warp's 16 rows (this lane's ra and rb = ra + 8) of a row-major bf16
 * matrix m with row stride ld; rows at or past T_ are 0. */
template <int HS>
__device__ __forceinline__ void load_a(uint32_t a[][4], const bf16 *m, size_t ld, int ra, int rb,
	int T_, int t)
{
	for (int kk = 0; kk < tc<HS>::KF; kk++) {
		int c = 16 * kk + 2 * t;
		a[kk][0] = ra < T_ ? load_pair(m + (size_t)ra * ld + c) : 0u;
		a[kk][1] = rb < T_ ? load_pair(m + (size_t)rb * ld + c) : 0u;
		a[kk][2] = ra < T_ ? load_pair(m + (size_t)ra * ld + c + 8) : 0u;
		a[kk][3] = rb < T_ ? load_pair(m + (size_t)rb * ld + c + 8) : 0u;
	}
}

/* Rows j0 .. j0+63 of m (row stride ld, HS columns) into a shared tile, 0 past T_; the whole
 * block takes part. */
template <int HS>
__device__ __forceinline__ void load_tile(bf16 (*tile)[HS + TC_PAD], const bf16 *m, size_t ld,
	int j0, int T_)
{
	for (int idx = threadIdx.x; idx < TC_BK * HS / 2; idx += TC_WARPS * 32) {
		int r = idx / (HS / 2), c = 2 * (idx % (HS / 2)), j = j0 + r;
		*reinterpret_cast<uint32_t *>(&tile[r][c]) =
			j < T_ ? load_pair(m + (size_t)j * ld + c) : 0u;
	}
}

/* s (16 x 64) = a (16 x HS) times the tile's rows transposed: each row of the tile a column. */
template <int HS>
__device__ __forceinline__ void mma_a_tileT(float s[][4], const uint32_t a[][4],
	const bf16 (*tile)[HS + TC_PAD], int g, int t)
{
	for (int n = 0; n < tc<HS>::NS; n++) {
		s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
		for (int kk = 0; kk < tc<HS>::KF; kk++)
			mma_bf16(s[n], a[kk], load_pair(&tile[8 * n + g][16 * kk + 2 * t]),
				load_pair(&tile[8 * n + g][16 * kk + 2 * t + 8]));
	}
}

/* o (16 x HS) += p (16 x 64, accumulators, rounded to bf16) times the tile: the accumulator
 * layout of p is the A layout, so it feeds the next product from registers. */
template <int HS>
__device__ __forceinline__ void mma_acc_tile(float o[][4], const float p[][4],
	const bf16 (*tile)[HS + TC_PAD], int g, int t)
{
	for (int kc = 0; kc < TC_BK / 16; kc++) {
		uint32_t pa[4] = { pack_f32(p[2 * kc][0], p[2 * kc][1]),
			pack_f32(p[2 * kc][2], p[2 * kc][3]),
			pack_f32(p[2 * kc + 1][0], p[2 * kc + 1][1]),
			pack_f32(p[2 * kc + 1][2], p[2 * kc + 1][3]) };
		int k = 16 * kc + 2 * t;
		for (int n = 0; n < tc<HS>::NO; n++) {
			int d = 8 * n + g;
			mma_bf16(o[n], pa, pack_bf16(tile[k][d], tile[k + 1][d]),
				pack_bf16(tile[k + 8][d], tile[k + 9][d]));
		}
	}
}

/* Rows ra and rb of the warp's (16 x HS) accumulators o, times f, into dst (row stride ld). */
template <int HS>
__device__ __forceinline__ void store_acc(bf16 *dst, size_t ld, const float o[][4], float fa,
	float fb, int ra, int rb, int T_, int t)
{
	for (int n = 0; n < tc<HS>::NO; n++) {
		int d = 8 * n + 2 * t;
		if (ra < T_)
			*reinterpret_cast<uint32_t *>(dst + (size_t)ra * ld + d) =
				pack_f32(o[n][0] * fa, o[n][1] * fa);
		if (rb < T_)
			*reinterpret_cast<uint32_t *>(dst + (size_t)rb * ld + d) =
				pack_f32(o[n][2] * fb, o[n][3] * fb);
	}
}

/* The sum over the 4 lanes of a row (t = 0..3). */
__device__ __forceinline__ float row_sum4(float v)
{
	v += __shfl_xor_sync(0xffffffffu, v, 1);
	return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float row_max4(float v)
{
	v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
	return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

template <int HS>
__global__ void __launch_bounds__(TC_WARPS * 32) attention_forward_tc_kernel(bf16 *out, float *lse,
	const bf16 *qkv, int T_, int C, int NH, float scale)
{
	constexpr int NS = tc<HS>::NS, NO = tc<HS>::NO;
	__shared__ __align__(16) bf16 Ks[TC_BK][HS + TC_PAD], Vs[TC_BK][HS + TC_PAD];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int q0 = blockIdx.x * TC_BQ, r0 = q0 + 16 * w; /* the warp's rows r0 .. r0+15 */
	int ra = r0 + g, rb = r0 + g + 8;              /* this lane's two rows */
	size_t C3 = 3 * (size_t)C;
	const bf16 *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;

	uint32_t qa[tc<HS>::KF][4];
	load_a<HS>(qa, base, C3, ra, rb, T_, t);
	float o[NO][4] = {};
	float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f; /* la, lb: this lane's part */
	int last = min(q0 + TC_BQ - 1, T_ - 1);
	for (int j0 = 0; j0 <= last; j0 += TC_BK) {
		__syncthreads();
		load_tile<HS>(Ks, base + C, C3, j0, T_);
		load_tile<HS>(Vs, base + 2 * C, C3, j0, T_);
		__syncthreads();
		if (r0 >= T_ || j0 > r0 + 15)
			continue; /* every key of the tile is masked for this warp */
		float s[NS][4];
		mma_a_tileT<HS>(s, qa, Ks, g, t);
		float ta = -INFINITY, tb = -INFINITY;
		for (int n = 0; n < NS; n++)
			for (int e = 0; e < 4; e++) {
				int j = j0 + 8 * n + 2 * t + (e & 1), i = e < 2 ? ra : rb;
				s[n][e] = j <= i && j < T_ ? s[n][e] * scale : -INFINITY;
				if (e < 2)
					ta = fmaxf(ta, s[n][e]);
				else
					tb = fmaxf(tb, s[n][e]);
			}
		/* key 0 is in the first tile and never masked: the maxima are finite from there */
		float na = fmaxf(ma, row_max4(ta)), nb = fmaxf(mb, row_max4(tb));
		float ca = ma == -INFINITY ? 0.0f : expf(ma - na);
		float cb = mb == -INFINITY ? 0.0f : expf(mb - nb);
		ma = na, mb = nb;
		la *= ca, lb *= cb;
		for (int n = 0; n < NO; n++)
			o[n][0] *= ca, o[n][1] *= ca, o[n][2] *= cb, o[n][3] *= cb;
		for (int n = 0; n < NS; n++) {
			s[n][0] = expf(s[n][0] - na), s[n][1] = expf(s[n][1] - na);
			s[n][2] = expf(s[n][2] - nb), s[n][3] = expf(s[n][3] - nb);
			la += s[n][0] + s[n][1];
			lb += s[n][2] + s[n][3];
		}
		mma_acc_tile<HS>(o, s, Vs, g, t);
	}
	la = row_sum4(la), lb = row_sum4(lb);
	store_acc<HS>(out + (size_t)b * T_ * C + (size_t)h * HS, C, o, 1.0f / la, 1.0f / lb, ra, rb,
		T_, t);
	if (t == 0) {
		if (ra < T_)
			lse[(size_t)bh * T_ + ra] = ma + logf(la);
		if (rb < T_)
			lse[(size_t)bh * T_ + rb] = mb + logf(lb);
	}
}

/* dq = scale * dS K over the keys up to each row, dS = P * (dP - delta), P = exp(S * scale -
 * lse), dP = dO V^T: the block's 64 query rows as in the forward, Q and dO as A fragments. */
template <int HS>
__global__ void __launch_bounds__(TC_WARPS * 32)
	attention_dq_tc_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse,
		const float *delta, int T_, int C, int NH, float scale)
{
	constexpr int NS = tc<HS>::NS, NO = tc<HS>::NO;
	__shared__ __align__(16) bf16 Ks[TC_BK][HS + TC_PAD], Vs[TC_BK][HS + TC_PAD];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int q0 = blockIdx.x * TC_BQ, r0 = q0 + 16 * w, ra = r0 + g, rb = r0 + g + 8;
	size_t C3 = 3 * (size_t)C;
	const bf16 *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	uint32_t qa[tc<HS>::KF][4], da[tc<HS>::KF][4];
	load_a<HS>(qa, base, C3, ra, rb, T_, t);
	load_a<HS>(da, dout + (size_t)b * T_ * C + (size_t)h * HS, C, ra, rb, T_, t);
	float La = ra < T_ ? lse[(size_t)bh * T_ + ra] : 0.0f;
	float Lb = rb < T_ ? lse[(size_t)bh * T_ + rb] : 0.0f;
	float Da = ra < T_ ? delta[(size_t)bh * T_ + ra] : 0.0f;
	float Db = rb < T_ ? delta[(size_t)bh * T_ + rb] : 0.0f;
	float dq[NO][4] = {};
	int last = min(q0 + TC_BQ - 1, T_ - 1);
	for (int j0 = 0; j0 <= last; j0 += TC_BK) {
		__syncthreads();
		load_tile<HS>(Ks, base + C, C3, j0, T_);
		load_tile<HS>(Vs, base + 2 * C, C3, j0, T_);
		__syncthreads();
		if (r0 >= T_ || j0 > r0 + 15)
			continue;
		float s[NS][4], dp[NS][4];
		mma_a_tileT<HS>(s, qa, Ks, g, t);
		mma_a_tileT<HS>(dp, da, Vs, g, t);
		for (int n = 0; n < NS; n++)
			for (int e = 0; e < 4; e++) {
				int j = j0 + 8 * n + 2 * t + (e & 1), i = e < 2 ? ra : rb;
				float p = j <= i && j < T_
						  ? expf(s[n][e] * scale - (e < 2 ? La : Lb))
						  : 0.0f;
				s[n][e] = p * (dp[n][e] - (e < 2 ? Da : Db));
			}
		mma_acc_tile<HS>(dq, s, Ks, g, t);
	}
	store_acc<HS>(dqkv + (size_t)b * T_ * C3 + (size_t)h * HS, C3, dq, scale, scale, ra, rb, T_,
		t);
}

/* dk = scale * dS^T Q and dv = P^T dO over the queries from each key on: the block owns 64 key
 * rows (K and V as A fragments), and walks the 64-row tiles of queries (Q, dO, their lse and
 * delta in shared memory) from its own diagonal to the end. */
template <int HS>
__global__ void __launch_bounds__(TC_WARPS * 32)
	attention_dkv_tc_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse,
		const float *delta, int T_, int C, int NH, float scale)
{
	constexpr int NS = tc<HS>::NS, NO = tc<HS>::NO;
	__shared__ __align__(16) bf16 Qs[TC_BK][HS + TC_PAD], dOs[TC_BK][HS + TC_PAD];
	__shared__ float Ls[TC_BK], Ds[TC_BK];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int k0 = blockIdx.x * TC_BQ, c0 = k0 + 16 * w, ka = c0 + g, kb = c0 + g + 8;
	size_t C3 = 3 * (size_t)C;
	const bf16 *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	const bf16 *dob = dout + (size_t)b * T_ * C + (size_t)h * HS;
	uint32_t kf[tc<HS>::KF][4], vf[tc<HS>::KF][4];
	load_a<HS>(kf, base + C, C3, ka, kb, T_, t);
	load_a<HS>(vf, base + 2 * C, C3, ka, kb, T_, t);
	float dk[NO][4] = {}, dv[NO][4] = {};
	for (int i0 = k0; i0 < T_; i0 += TC_BK) {
		__syncthreads();
		load_tile<HS>(Qs, base, C3, i0, T_);
		load_tile<HS>(dOs, dob, C, i0, T_);
		for (int r = threadIdx.x; r < TC_BK; r += TC_WARPS * 32) {
			Ls[r] = i0 + r < T_ ? lse[(size_t)bh * T_ + i0 + r] : 0.0f;
			Ds[r] = i0 + r < T_ ? delta[(size_t)bh * T_ + i0 + r] : 0.0f;
		}
		__syncthreads();
		if (c0 >= T_)
			continue;
		float s[NS][4], dp[NS][4];
		mma_a_tileT<HS>(s, kf, Qs, g, t);   /* S^T: keys down, queries across */
		mma_a_tileT<HS>(dp, vf, dOs, g, t); /* dP^T */
		for (int n = 0; n < NS; n++)
			for (int e = 0; e < 4; e++) {
				int c = 8 * n + 2 * t + (e & 1), i = i0 + c, j = e < 2 ? ka : kb;
				float p = j <= i && i < T_ ? expf(s[n][e] * scale - Ls[c]) : 0.0f;
				s[n][e] = p;
				dp[n][e] = p * (dp[n][e] - Ds[c]);
			}
		mma_acc_tile<HS>(dv, s, dOs, g, t);
		mma_acc_tile<HS>(dk, dp, Qs, g, t);
	}
	bf16 *dst = dqkv + (size_t)b * T_ * C3 + (size_t)h * HS;
	store_acc<HS>(dst + C, C3, dk, scale, scale, ka, kb, T_, t);
	store_acc<HS>(dst + 2 * C, C3, dv, 1.0f, 1.0f, ka, kb, T_, t);
}

extern "C" int k_attention_tc_supported(int C, int NH, enum kdtype dt)
{
	int hs = NH > 0 && C % NH == 0 ? C / NH : 0;
	return dt == KDT_BF16 && (hs == 16 || hs == 32 || hs == 64 || hs == 128);
}

/* The kernels' shapes, or the reason they cannot run (kept for k_error): 1 to go on. */
static int tc_check(int C, int NH, enum kdtype dt, const char *what)
{
	if (k_attention_tc_supported(C, NH, dt))
		return 1;
	k_error_record(__FILE__, __LINE__, what, "bf16 and head size 16, 32, 64 or 128 only");
	return 0;
}

extern "C" void k_attention_forward_tc(void *out, float *lse, const void *qkv, int B, int T, int C,
	int NH, enum kdtype dt, cudaStream_t s)
{
	if (!tc_check(C, NH, dt, "k_attention_forward_tc"))
		return;
	float scale = 1.0f / sqrtf((float)(C / NH));
	dim3 grid(div_up(T, TC_BQ), B * NH);
	HEAD_SIZE_SWITCH(C / NH, HS,
		attention_forward_tc_kernel<HS><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)out, lse,
			(const bf16 *)qkv, T, C, NH, scale));
	KLAUNCH_CHECK();
}

extern "C" void k_attention_backward_tc(void *dqkv, float *delta, const void *dout, const void *qkv,
	const void *out, const float *lse, int B, int T, int C, int NH, enum kdtype dt,
	cudaStream_t s)
{
	if (!tc_check(C, NH, dt, "k_attention_backward_tc"))
		return;
	float scale = 1.0f / sqrtf((float)(C / NH));
	dim3 grid(div_up(T, TC_BQ), B * NH);
	attention_delta(delta, dout, out, B, T, C, NH, dt, s);
	HEAD_SIZE_SWITCH(C / NH, HS, {
		attention_dq_tc_kernel<HS><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)dqkv,
			(const bf16 *)dout, (const bf16 *)qkv, lse, delta, T, C, NH, scale);
		attention_dkv_tc_kernel<HS><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)dqkv,
			(const bf16 *)dout, (const bf16 *)qkv, lse, delta, T, C, NH, scale);
	});
	KLAUNCH_CHECK();
}
