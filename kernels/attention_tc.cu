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
#define TC_BQ (16 * TC_WARPS) /* query rows per block */
#define TC_BK 64              /* key rows per tile */
#define TC_PAD 8              /* bf16 of padding per shared row: conflict-free fragment loads */

/* d (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment) */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0,
	uint32_t b1)
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
template <int HS>
__global__ void __launch_bounds__(TC_WARPS * 32)
	attention_forward_tc_kernel(bf16 *out, float *lse, const bf16 *qkv, int T_, int C, int NH,
		float scale)
{
	constexpr int KF = HS / 16; /* A fragments of Q along the head dims */
	constexpr int NS = TC_BK / 8; /* S tiles (8 keys) per key tile */
	constexpr int NO = HS / 8;  /* output tiles (8 dims) */
	constexpr int P = HS + TC_PAD;
	__shared__ __align__(16) bf16 Ks[TC_BK][P], Vs[TC_BK][P];
	int bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int q0 = blockIdx.x * TC_BQ, r0 = q0 + 16 * w; /* the warp's rows r0 .. r0+15 */
	int ra = r0 + g, rb = r0 + g + 8;             /* this lane's two rows */
	size_t C3 = 3 * (size_t)C;
	const bf16 *base = qkv + (size_t)b * T_ * C3 + (size_t)h * HS;

	uint32_t qa[KF][4];
	for (int kk = 0; kk < KF; kk++) {
		int c = 16 * kk + 2 * t;
		qa[kk][0] = ra < T_ ? load_pair(base + (size_t)ra * C3 + c) : 0u;
		qa[kk][1] = rb < T_ ? load_pair(base + (size_t)rb * C3 + c) : 0u;
		qa[kk][2] = ra < T_ ? load_pair(base + (size_t)ra * C3 + c + 8) : 0u;
		qa[kk][3] = rb < T_ ? load_pair(base + (size_t)rb * C3 + c + 8) : 0u;
	}
	float o[NO][4];
	for (int n = 0; n < NO; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
	float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f; /* la, lb: this lane's part */

	int last = min(q0 + TC_BQ - 1, T_ - 1);
	for (int j0 = 0; j0 <= last; j0 += TC_BK) {
		__syncthreads();
		for (int idx = threadIdx.x; idx < TC_BK * HS / 2; idx += TC_WARPS * 32) {
			int r = idx / (HS / 2), c = 2 * (idx % (HS / 2)), j = j0 + r;
			uint32_t k = 0u, v = 0u;
			if (j < T_) {
				k = load_pair(base + (size_t)j * C3 + C + c);
				v = load_pair(base + (size_t)j * C3 + 2 * C + c);
			}
			*reinterpret_cast<uint32_t *>(&Ks[r][c]) = k;
			*reinterpret_cast<uint32_t *>(&Vs[r][c]) = v;
		}
		__syncthreads();
		if (r0 >= T_ || j0 > r0 + 15)
			continue; /* every key of the tile is masked for this warp */

		float s[NS][4];
		for (int n = 0; n < NS; n++) {
			s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
			for (int kk = 0; kk < KF; kk++)
				mma_bf16(s[n], qa[kk], load_pair(&Ks[8 * n + g][16 * kk + 2 * t]),
					load_pair(&Ks[8 * n + g][16 * kk + 2 * t + 8]));
		}
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
		for (int x = 1; x <= 2; x <<= 1) {
			ta = fmaxf(ta, __shfl_xor_sync(0xffffffffu, ta, x));
			tb = fmaxf(tb, __shfl_xor_sync(0xffffffffu, tb, x));
		}
		/* key 0 is in the first tile and never masked: the maxima are finite from there */
		float na = fmaxf(ma, ta), nb = fmaxf(mb, tb);
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
		for (int kc = 0; kc < TC_BK / 16; kc++) {
			uint32_t pa[4] = { pack_f32(s[2 * kc][0], s[2 * kc][1]),
				pack_f32(s[2 * kc][2], s[2 * kc][3]),
				pack_f32(s[2 * kc + 1][0], s[2 * kc + 1][1]),
				pack_f32(s[2 * kc + 1][2], s[2 * kc + 1][3]) };
			int k = 16 * kc + 2 * t;
			for (int n = 0; n < NO; n++) {
				int d = 8 * n + g;
				mma_bf16(o[n], pa, pack_bf16(Vs[k][d], Vs[k + 1][d]),
					pack_bf16(Vs[k + 8][d], Vs[k + 9][d]));
			}
		}
	}
	for (int x = 1; x <= 2; x <<= 1) {
		la += __shfl_xor_sync(0xffffffffu, la, x);
		lb += __shfl_xor_sync(0xffffffffu, lb, x);
	}
	float ia = 1.0f / la, ib = 1.0f / lb;
	for (int n = 0; n < NO; n++) {
		int d = 8 * n + 2 * t;
		if (ra < T_)
			*reinterpret_cast<uint32_t *>(out + ((size_t)b * T_ + ra) * C + h * HS + d) =
				pack_f32(o[n][0] * ia, o[n][1] * ia);
		if (rb < T_)
			*reinterpret_cast<uint32_t *>(out + ((size_t)b * T_ + rb) * C + h * HS + d) =
				pack_f32(o[n][2] * ib, o[n][3] * ib);
	}
	if (t == 0) {
		if (ra < T_)
			lse[(size_t)bh * T_ + ra] = ma + logf(la);
		if (rb < T_)
			lse[(size_t)bh * T_ + rb] = mb + logf(lb);
	}
}

extern "C" int k_attention_tc_supported(int C, int NH, enum kdtype dt)
{
	int hs = NH > 0 && C % NH == 0 ? C / NH : 0;
	return dt == KDT_BF16 && (hs == 16 || hs == 32 || hs == 64 || hs == 128);
}

extern "C" void k_attention_forward_tc(void *out, float *lse, const void *qkv, int B, int T,
	int C, int NH, enum kdtype dt, cudaStream_t s)
{
	int hs = C / NH;
	float scale = 1.0f / sqrtf((float)hs);
	dim3 grid(div_up(T, TC_BQ), B * NH);
	if (!k_attention_tc_supported(C, NH, dt)) {
		k_error_record(__FILE__, __LINE__, "k_attention_forward_tc",
			"bf16 and head size 16, 32, 64 or 128 only");
		return;
	}
	switch (hs) {
	case 16:
		attention_forward_tc_kernel<16><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)out, lse,
			(const bf16 *)qkv, T, C, NH, scale);
		break;
	case 32:
		attention_forward_tc_kernel<32><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)out, lse,
			(const bf16 *)qkv, T, C, NH, scale);
		break;
	case 64:
		attention_forward_tc_kernel<64><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)out, lse,
			(const bf16 *)qkv, T, C, NH, scale);
		break;
	default:
		attention_forward_tc_kernel<128><<<grid, TC_WARPS * 32, 0, s>>>((bf16 *)out, lse,
			(const bf16 *)qkv, T, C, NH, scale);
		break;
	}
	KLAUNCH_CHECK();
}
