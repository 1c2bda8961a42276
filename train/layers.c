/* train/: the fp32 GPT-2 layers (see layers.h): the arithmetic of the CPU trainer and the
 * reference the CUDA kernels are checked against. OpenMP threads split each layer into
 * disjoint outputs; no sum depends on how the work was split. */
#include "train/layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B,
	int T, int C)
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

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
	const float *weight, const float *bias, int N, int C)
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

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
	int C, int OC)
{
	/* Rows in tiles of 4 so that each weight row, once in cache, serves four dot products. */
	int nr_tiles = (N + 3) / 4;
#pragma omp parallel for schedule(static)
	for (int tile = 0; tile < nr_tiles; tile++) {
		int n0 = tile * 4, n1 = n0 + 4 < N ? n0 + 4 : N;
		for (int o = 0; o < OC; o++) {
			const float *w = weight + (size_t)o * C;
			float b = bias ? bias[o] : 0.0f;
			for (int n = n0; n < n1; n++)
				out[(size_t)n * OC + o] = b + dot(inp + (size_t)n * C, w, C);
		}
	}
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
	const float *inp, const float *weight, int N, int C, int OC)
{
	/* dinp (N,C) += dout (N,OC) @ weight (OC,C): one row of dinp per iteration */
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *d = dout + (size_t)n * OC;
		float *dx = dinp + (size_t)n * C;
		for (int o = 0; o < OC; o++)
			axpy(dx, d[o], weight + (size_t)o * C, C);
	}
	/* dweight (OC,C) += dout^T (OC,N) @ inp (N,C): one row of dweight per iteration */
#pragma omp parallel for schedule(static)
	for (int o = 0; o < OC; o++) {
		float *dw = dweight + (size_t)o * C;
		float db = 0.0f;
		for (int n = 0; n < N; n++) {
			float d = dout[(size_t)n * OC + o];
			axpy(dw, d, inp + (size_t)n * C, C);
			db += d;
		}
		if (dbias)
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
					const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
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
					const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
					axpy(o, a[t2], v, hs);
				}
			}
		}
	}
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
	int B, int T, int C, int NH)
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
