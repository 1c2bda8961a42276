/* train/: the fp32 GPT-2 layers (see layers.h): the arithmetic of the CPU trainer and the
 * reference the CUDA kernels are checked against. OpenMP threads split each layer into
 * disjoint outputs; no sum depends on how the work was split. */
#include "train/layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* A dot product with 8 independent partial sums: the compiler can keep them in vector registers
 * (a single running sum cannot be vectorised without reordering floats), and the order of
 * additions is still fixed by the code, so the result is the same on every run. */
static inline float dot(const float *restrict a, const float *restrict b, int n)
{
	float acc[8] = { 0 };
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			acc[k] += a[i + k] * b[i + k];
	float tail = 0.0f;
	for (; i < n; i++)
		tail += a[i] * b[i];
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) +
	       tail;
}

static inline void axpy(float *restrict y, float a, const float *restrict x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
	int T, int C)
{
#pragma omp parallel for collapse(2)
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < T; t++) {
			float *o = out + ((size_t)b * T + t) * C;
			const float *we = wte + (size_t)inp[b * T + t] * C;
			const float *pe = wpe + (size_t)t * C;
			for (int c = 0; c < C; c++)
				o[c] = we[c] + pe[c];
		}
	}
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T,
	int C)
{
	/* Two positions may hold the same token: a sequential loop keeps the sums in order. */
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < T; t++) {
			const float *d = dout + ((size_t)b * T + t) * C;
			axpy(dwte + (size_t)inp[b * T + t] * C, 1.0f, d, C);
			axpy(dwpe + (size_t)t * C, 1.0f, d, C);
		}
	}
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
	const float *bias, int N, int C)
{
	const float eps = 1e-5f;
#pragma omp parallel for
	for (int n = 0; n < N; n++) {
		const float *x = inp + (size_t)n * C;
		float m = 0.0f;
		for (int c = 0; c < C; c++)
			m += x[c];
		m /= C;
		float v = 0.0f;
		for (int c = 0; c < C; c++)
			v += (x[c] - m) * (x[c] - m);
		v /= C;
		float s = 1.0f / sqrtf(v + eps);
		float *o = out + (size_t)n * C;
		for (int c = 0; c < C; c++)
			o[c] = (x[c] - m) * s * weight[c] + bias[c];
		mean[n] = m;
		rstd[n] = s;
	}
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
	const float *inp, const float *weight, const float *mean, const float *rstd, int N, int C)
{
#pragma omp parallel for
	for (int n = 0; n < N; n++) {
		const float *d = dout + (size_t)n * C;
		const float *x = inp + (size_t)n * C;
		float m = mean[n], s = rstd[n];
		/* dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * w */
		float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
		for (int c = 0; c < C; c++) {
			float dnorm = d[c] * weight[c];
			dnorm_mean += dnorm;
			dnorm_norm_mean += dnorm * (x[c] - m) * s;
		}
		dnorm_mean /= C;
		dnorm_norm_mean /= C;
		float *dx = dinp + (size_t)n * C;
		for (int c = 0; c < C; c++) {
			float norm = (x[c] - m) * s;
			float dnorm = d[c] * weight[c];
			dx[c] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
		}
	}
	/* Weight and bias gradients sum over rows: split by channel so each sum has one owner. */
#pragma omp parallel for
	for (int c = 0; c < C; c++) {
		float dw = 0.0f, db = 0.0f;
		for (int n = 0; n < N; n++) {
			float d = dout[(size_t)n * C + c];
			dw += d * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
			db += d;
		}
		dweight[c] += dw;
		dbias[c] += db;
	}
}

/* ---- matmul ----
 * The three products are cache-blocked and register-tiled, with an AVX2 micro-kernel where the
 * CPU has it. Every output element is still summed in the one order of the plain loops (the
 * forward: dot() over C; the backward: k = 0, 1, ... in sequence, starting from the gradient's
 * old value), and the AVX2 kernels multiply and add separately (no FMA), so the results are the
 * same bits on every machine, with any number of threads, with or without AVX2. */

static int have_avx2(void)
{
	static int cached = -1;
	if (cached < 0) {
		__builtin_cpu_init();
		cached = __builtin_cpu_supports("avx2") ? 1 : 0;
	}
	return cached;
}

/* out[n][o] = bias[o] + dot(inp[n], w[o]) for nr_n rows and nr_o weights (any tile size). */
static void fwd_tile_c(float *out, int OC, const float *inp, const float *w, const float *bias,
	int C, int nr_n, int nr_o)
{
	for (int n = 0; n < nr_n; n++)
		for (int o = 0; o < nr_o; o++)
			out[(size_t)n * OC + o] = (bias ? bias[o] : 0.0f) +
						  dot(inp + (size_t)n * C, w + (size_t)o * C, C);
}

#if defined(__x86_64__)
#define FWD_MR 4 /* rows of inp per AVX2 tile */
#define FWD_MO 3 /* rows of weight per AVX2 tile */

/* dot()'s last steps on the 8 lanes: the same tree of additions, then the tail. */
__attribute__((target("avx2"))) static inline float reduce8(__m256 v, float tail)
{
	float a[8];
	_mm256_storeu_ps(a, v);
	return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

/* fwd_tile_c for a FWD_MR x FWD_MO tile: 12 vector accumulators, lane k of each holding dot()'s
 * acc[k]. */
__attribute__((target("avx2"))) static void fwd_tile_avx2(float *out, int OC, const float *inp,
	const float *w, const float *bias, int C)
{
	__m256 acc[FWD_MR][FWD_MO];
	for (int r = 0; r < FWD_MR; r++)
		for (int j = 0; j < FWD_MO; j++)
			acc[r][j] = _mm256_setzero_ps();
	const float *x0 = inp, *x1 = inp + C, *x2 = inp + 2 * (size_t)C, *x3 = inp + 3 * (size_t)C;
	const float *w0 = w, *w1 = w + C, *w2 = w + 2 * (size_t)C;
	int i = 0;
	for (; i + 8 <= C; i += 8) {
		__m256 b0 = _mm256_loadu_ps(w0 + i), b1 = _mm256_loadu_ps(w1 + i);
		__m256 b2 = _mm256_loadu_ps(w2 + i);
		__m256 a = _mm256_loadu_ps(x0 + i);
		acc[0][0] = _mm256_add_ps(acc[0][0], _mm256_mul_ps(a, b0));
		acc[0][1] = _mm256_add_ps(acc[0][1], _mm256_mul_ps(a, b1));
		acc[0][2] = _mm256_add_ps(acc[0][2], _mm256_mul_ps(a, b2));
		a = _mm256_loadu_ps(x1 + i);
		acc[1][0] = _mm256_add_ps(acc[1][0], _mm256_mul_ps(a, b0));
		acc[1][1] = _mm256_add_ps(acc[1][1], _mm256_mul_ps(a, b1));
		acc[1][2] = _mm256_add_ps(acc[1][2], _mm256_mul_ps(a, b2));
		a = _mm256_loadu_ps(x2 + i);
		acc[2][0] = _mm256_add_ps(acc[2][0], _mm256_mul_ps(a, b0));
		acc[2][1] = _mm256_add_ps(acc[2][1], _mm256_mul_ps(a, b1));
		acc[2][2] = _mm256_add_ps(acc[2][2], _mm256_mul_ps(a, b2));
		a = _mm256_loadu_ps(x3 + i);
		acc[3][0] = _mm256_add_ps(acc[3][0], _mm256_mul_ps(a, b0));
		acc[3][1] = _mm256_add_ps(acc[3][1], _mm256_mul_ps(a, b1));
		acc[3][2] = _mm256_add_ps(acc[3][2], _mm256_mul_ps(a, b2));
	}
	for (int r = 0; r < FWD_MR; r++)
		for (int j = 0; j < FWD_MO; j++) {
			const float *x = inp + (size_t)r * C, *wr = w + (size_t)j * C;
			float tail = 0.0f;
			for (int k = i; k < C; k++)
				tail += x[k] * wr[k];
			out[(size_t)r * OC + j] =
				(bias ? bias[j] : 0.0f) + reduce8(acc[r][j], tail);
		}
}

#define ACC_MR 6  /* rows per AVX2 accumulate tile */
#define ACC_NR 16 /* columns per AVX2 accumulate tile (two vectors) */

/* c[r][j] += a(r, k) * b[k][j] for k = k0..k1-1 in order, a(r, k) = a[r * a_rs + k * a_ks], on
 * an ACC_MR x ACC_NR tile. */
__attribute__((target("avx2"))) static void acc_tile_avx2(float *c, size_t ldc, const float *a,
	size_t a_rs, size_t a_ks, const float *b, size_t ldb, int k0, int k1)
{
	__m256 acc[ACC_MR][2];
	for (int r = 0; r < ACC_MR; r++) {
		acc[r][0] = _mm256_loadu_ps(c + r * ldc);
		acc[r][1] = _mm256_loadu_ps(c + r * ldc + 8);
	}
	for (int k = k0; k < k1; k++) {
		const float *bk = b + (size_t)k * ldb, *ak = a + (size_t)k * a_ks;
		__m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
		for (int r = 0; r < ACC_MR; r++) {
			__m256 x = _mm256_broadcast_ss(ak + r * a_rs);
			acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(x, b0));
			acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(x, b1));
		}
	}
	for (int r = 0; r < ACC_MR; r++) {
		_mm256_storeu_ps(c + r * ldc, acc[r][0]);
		_mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
	}
}
#else
#define FWD_MR 4
#define FWD_MO 3
#define ACC_MR 6
#define ACC_NR 16
#endif

/* acc_tile_avx2 for any nr_r x nr_c tile, in plain C (the edges, and CPUs without AVX2). */
static void acc_tile_c(float *c, size_t ldc, const float *a, size_t a_rs, size_t a_ks,
	const float *b, size_t ldb, int k0, int k1, int nr_r, int nr_c)
{
	for (int r = 0; r < nr_r; r++) {
		float *cr = c + r * ldc;
		for (int k = k0; k < k1; k++) {
			float x = a[r * a_rs + (size_t)k * a_ks];
			const float *bk = b + (size_t)k * ldb;
			for (int j = 0; j < nr_c; j++)
				cr[j] += x * bk[j];
		}
	}
}

#define ACC_RB 48  /* rows per task (a multiple of ACC_MR) */
#define ACC_CB 128 /* columns per task (a multiple of ACC_NR) */
#define ACC_KC 256 /* k per pass: the task's slice of b stays in L2, a tile's in L1 */

/* c (R,M) += a (R,K) @ b (K,M), a(r, k) = a[r * a_rs + k * a_ks]; c's and b's rows are ldc
 * and ldb apart. Tasks own disjoint blocks of c; within a task every element still sees
 * k = 0..K-1 in order (the k passes run outermost), so the sums are those of the plain loop. */
static void gemm_acc(float *c, size_t ldc, const float *a, size_t a_rs, size_t a_ks, const float *b,
	size_t ldb, int R, int M, int K)
{
	int nr_rb = (R + ACC_RB - 1) / ACC_RB, nr_cb = (M + ACC_CB - 1) / ACC_CB;
	int avx2 = have_avx2();
#pragma omp parallel for collapse(2) schedule(static)
	for (int rb = 0; rb < nr_rb; rb++) {
		for (int cb = 0; cb < nr_cb; cb++) {
			int r0 = rb * ACC_RB, r1 = r0 + ACC_RB < R ? r0 + ACC_RB : R;
			int c0 = cb * ACC_CB, c1 = c0 + ACC_CB < M ? c0 + ACC_CB : M;
			for (int k0 = 0; k0 < K; k0 += ACC_KC) {
				int k1 = k0 + ACC_KC < K ? k0 + ACC_KC : K;
				for (int j = c0; j < c1; j += ACC_NR) {
					int nr_c = j + ACC_NR <= c1 ? ACC_NR : c1 - j;
					for (int r = r0; r < r1; r += ACC_MR) {
						int nr_r = r + ACC_MR <= r1 ? ACC_MR : r1 - r;
						float *ct = c + (size_t)r * ldc + j;
						const float *at = a + (size_t)r * a_rs;
						const float *bt = b + j;
#if defined(__x86_64__)
						if (avx2 && nr_r == ACC_MR && nr_c == ACC_NR) {
							acc_tile_avx2(ct, ldc, at, a_rs, a_ks, bt,
								ldb, k0, k1);
							continue;
						}
#endif
						acc_tile_c(ct, ldc, at, a_rs, a_ks, bt, ldb, k0, k1,
							nr_r, nr_c);
					}
				}
			}
		}
	}
	(void)avx2;
}

#define FWD_RB 32 /* rows of inp per task (a multiple of FWD_MR) */
#define FWD_OB 48 /* rows of weight per task (a multiple of FWD_MO) */

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
	int C, int OC)
{
	int nr_nb = (N + FWD_RB - 1) / FWD_RB, nr_ob = (OC + FWD_OB - 1) / FWD_OB;
	int avx2 = have_avx2();
#pragma omp parallel for collapse(2) schedule(static)
	for (int nb = 0; nb < nr_nb; nb++) {
		for (int ob = 0; ob < nr_ob; ob++) {
			int n0 = nb * FWD_RB, n1 = n0 + FWD_RB < N ? n0 + FWD_RB : N;
			int o0 = ob * FWD_OB, o1 = o0 + FWD_OB < OC ? o0 + FWD_OB : OC;
			for (int o = o0; o < o1; o += FWD_MO) {
				int nr_o = o + FWD_MO <= o1 ? FWD_MO : o1 - o;
				for (int n = n0; n < n1; n += FWD_MR) {
					int nr_n = n + FWD_MR <= n1 ? FWD_MR : n1 - n;
					float *ot = out + (size_t)n * OC + o;
					const float *it = inp + (size_t)n * C;
					const float *wt = weight + (size_t)o * C;
					const float *bt = bias ? bias + o : NULL;
#if defined(__x86_64__)
					if (avx2 && nr_n == FWD_MR && nr_o == FWD_MO) {
						fwd_tile_avx2(ot, OC, it, wt, bt, C);
						continue;
					}
#endif
					fwd_tile_c(ot, OC, it, wt, bt, C, nr_n, nr_o);
				}
			}
		}
	}
	(void)avx2;
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
	const float *weight, int N, int C, int OC)
{
	/* dinp (N,C) += dout (N,OC) @ weight (OC,C) */
	gemm_acc(dinp, C, dout, OC, 1, weight, C, N, C, OC);
	/* dweight (OC,C) += dout^T (OC,N) @ inp (N,C) */
	gemm_acc(dweight, C, dout, 1, OC, inp, C, OC, C, N);
	if (!dbias)
		return;
#pragma omp parallel for schedule(static)
	for (int o = 0; o < OC; o++) {
		float db = 0.0f;
		for (int n = 0; n < N; n++)
			db += dout[(size_t)n * OC + o];
		dbias[o] += db;
	}
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH)
{
	int hs = C / NH;
	float scale = 1.0f / sqrtf((float)hs);
	size_t C3 = (size_t)C * 3;
#pragma omp parallel for collapse(3)
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < T; t++) {
			for (int h = 0; h < NH; h++) {
				const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
				float *a = att + (((size_t)b * NH + h) * T + t) * T;
				float maxv = -INFINITY;
				for (int t2 = 0; t2 <= t; t2++) {
					const float *k =
						qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
					a[t2] = dot(q, k, hs) * scale;
					if (a[t2] > maxv)
						maxv = a[t2];
				}
				float sum = 0.0f;
				for (int t2 = 0; t2 <= t; t2++) {
					a[t2] = expf(a[t2] - maxv);
					sum += a[t2];
				}
				float inv = 1.0f / sum;
				for (int t2 = 0; t2 <= t; t2++)
					a[t2] *= inv;
				for (int t2 = t + 1; t2 < T; t2++)
					a[t2] = 0.0f;
				float *o = out + ((size_t)b * T + t) * C + h * hs;
				memset(o, 0, sizeof(float) * hs);
				for (int t2 = 0; t2 <= t; t2++) {
					const float *v =
						qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
					axpy(o, a[t2], v, hs);
				}
			}
		}
	}
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
	int T, int C, int NH)
{
	int hs = C / NH;
	float scale = 1.0f / sqrtf((float)hs);
	size_t C3 = (size_t)C * 3;
	/* Keys and values of one (b, h) collect gradients from every later query: one (b, h) per
	 * iteration keeps each of those sums with a single thread. */
#pragma omp parallel
	{
		float *datt = malloc(sizeof(float) * (size_t)T);
#pragma omp for collapse(2)
		for (int b = 0; b < B; b++) {
			for (int h = 0; h < NH; h++) {
				for (int t = 0; t < T; t++) {
					const float *a = att + (((size_t)b * NH + h) * T + t) * T;
					const float *d = dout + ((size_t)b * T + t) * C + h * hs;
					const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
					float *dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
					float s = 0.0f;
					for (int t2 = 0; t2 <= t; t2++) {
						size_t row = ((size_t)b * T + t2) * C3;
						const float *v = qkv + row + 2 * C + h * hs;
						datt[t2] = dot(d, v, hs);
						axpy(dqkv + row + 2 * C + h * hs, a[t2], d, hs);
						s += a[t2] * datt[t2];
					}
					for (int t2 = 0; t2 <= t; t2++) {
						size_t row = ((size_t)b * T + t2) * C3;
						float dpre = a[t2] * (datt[t2] - s) * scale;
						axpy(dq, dpre, qkv + row + C + h * hs, hs);
						axpy(dqkv + row + C + h * hs, dpre, q, hs);
					}
				}
			}
		}
		free(datt);
	}
}

void gelu_forward(float *out, const float *inp, int n)
{
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) {
		float x = inp[i];
		out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
	}
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int n)
{
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) {
		float x = inp[i];
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		float th = tanhf(u);
		float sech2 = 1.0f - th * th;
		float g = 0.5f * (1.0f + th) +
			  0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
		dinp[i] += g * dout[i];
	}
}

void residual_forward(float *out, const float *a, const float *b, int n)
{
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++)
		out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, int n)
{
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) {
		da[i] += dout[i];
		db[i] += dout[i];
	}
}

void softmax_crossentropy_forward(float *losses, float *probs, const float *logits,
	const int32_t *targets, int N, int V, int Vp)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *z = logits + (size_t)n * Vp;
		float *p = probs + (size_t)n * Vp;
		float maxv = -INFINITY;
		for (int i = 0; i < V; i++)
			if (z[i] > maxv)
				maxv = z[i];
		float sum = 0.0f;
		for (int i = 0; i < V; i++) {
			p[i] = expf(z[i] - maxv);
			sum += p[i];
		}
		float inv = 1.0f / sum;
		for (int i = 0; i < V; i++)
			p[i] *= inv;
		for (int i = V; i < Vp; i++)
			p[i] = 0.0f;
		/* log-sum-exp form: finite even when the target's probability underflows */
		losses[n] = logf(sum) + maxv - z[targets[n]];
	}
}

void softmax_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets,
	const float *dlosses, int N, int V, int Vp)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *p = probs + (size_t)n * Vp;
		float *dz = dlogits + (size_t)n * Vp;
		float dl = dlosses[n];
		for (int i = 0; i < V; i++)
			dz[i] += p[i] * dl;
		dz[targets[n]] -= dl;
	}
}
