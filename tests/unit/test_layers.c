/* Unit tests of train/layers.c: each forward against a plain double-precision twin written
 * here, and each backward against central finite differences of its forward, on shapes drawn
 * at random (fixed seeds). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "train/layers.h"

static uint64_t rng_state = 42;

static uint32_t rnd(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(rng_state >> 33);
}

static int rnd_int(int lo, int hi) /* [lo, hi] */
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static float rnd_normal(void)
{
	double u1 = (rnd() + 1.0) / 2147483649.0, u2 = rnd() / 2147483648.0;
	return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

static float *randn(size_t n, float scale)
{
	float *p = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		p[i] = rnd_normal() * scale;
	return p;
}

static float *zeros(size_t n)
{
	return calloc(n, sizeof(float));
}

/* The scalar a finite difference differentiates: sum(out * w), summed in double. */
static double weighted(const float *out, const float *w, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)out[i] * w[i];
	return s;
}

/* A layer's forward with everything but one input fixed. */
struct fd_case {
	void (*forward)(struct fd_case *c);
	float *out;
	size_t nr_out;
	const float *w;
	void *ctx[8];
	int dims[6];
};

/* Checks grad (n) of the input x against (L(x+h) - L(x-h)) / 2h at up to 48 positions. */
static void check_grad(const char *what, struct fd_case *c, float *x, const float *grad, size_t n,
	float h, double atol, double rtol)
{
	size_t nr = n < 48 ? n : 48;
	for (size_t k = 0; k < nr; k++) {
		size_t i = n <= 48 ? k : rnd() % n;
		float saved = x[i];
		x[i] = saved + h;
		c->forward(c);
		double plus = weighted(c->out, c->w, c->nr_out);
		x[i] = saved - h;
		c->forward(c);
		double minus = weighted(c->out, c->w, c->nr_out);
		x[i] = saved;
		double fd = (plus - minus) / (2.0 * h);
		cr_assert(fabs(fd - grad[i]) <= atol + rtol * fabs(fd),
			"%s[%zu]: backward %.6g, finite difference %.6g", what, i, grad[i], fd);
	}
	c->forward(c);
}

/* ---- matmul ---- */

static void matmul_fwd(struct fd_case *c)
{
	matmul_forward(c->out, c->ctx[0], c->ctx[1], c->ctx[2], c->dims[0], c->dims[1], c->dims[2]);
}

Test(layers, matmul_forward_matches_a_double_precision_product)
{
	for (int trial = 0; trial < 5; trial++) {
		int N = rnd_int(1, 13), C = rnd_int(1, 37), OC = rnd_int(1, 29);
		float *x = randn((size_t)N * C, 1), *w = randn((size_t)OC * C, 1),
		      *b = randn(OC, 1);
		float *out = zeros((size_t)N * OC);
		matmul_forward(out, x, w, trial % 2 ? NULL : b, N, C, OC);
		for (int n = 0; n < N; n++)
			for (int o = 0; o < OC; o++) {
				double s = trial % 2 ? 0 : b[o];
				for (int i = 0; i < C; i++)
					s += (double)x[n * C + i] * w[o * C + i];
				cr_assert_float_eq(out[n * OC + o], s, 1e-4 * (1 + fabs(s)),
					"N %d C %d OC %d at (%d, %d)", N, C, OC, n, o);
			}
		free(x), free(w), free(b), free(out);
	}
}

Test(layers, matmul_backward_matches_finite_differences)
{
	for (int trial = 0; trial < 4; trial++) {
		int N = rnd_int(1, 9), C = rnd_int(1, 21), OC = rnd_int(1, 17);
		float *x = randn((size_t)N * C, 1), *w = randn((size_t)OC * C, 0.5f);
		float *b = randn(OC, 1), *out = zeros((size_t)N * OC),
		      *dout = randn((size_t)N * OC, 1);
		float *dx = zeros((size_t)N * C), *dw = zeros((size_t)OC * C), *db = zeros(OC);
		struct fd_case c = { matmul_fwd, out, (size_t)N * OC, dout, { x, w, b },
			{ N, C, OC } };
		matmul_forward(out, x, w, b, N, C, OC);
		matmul_backward(dx, dw, db, dout, x, w, N, C, OC);
		check_grad("dinp", &c, x, dx, (size_t)N * C, 1e-2f, 1e-3, 1e-3);
		check_grad("dweight", &c, w, dw, (size_t)OC * C, 1e-2f, 1e-3, 1e-3);
		check_grad("dbias", &c, b, db, OC, 1e-2f, 1e-3, 1e-3);
		free(x), free(w), free(b), free(out), free(dout), free(dx), free(dw), free(db);
	}
}

/* The plain loops of matmul in their summation order: the forward a dot product with 8 lanes
 * (lane k sums the products i = k mod 8 in order), the lanes added as ((0+1)+(2+3))+((4+5)+(6+7))
 * and then the tail; the backward each gradient element from its old value over k = 0, 1, ... */
static void matmul_forward_twin(float *out, const float *x, const float *w, const float *b, int N,
	int C, int OC)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			const float *p = x + (size_t)n * C, *q = w + (size_t)o * C;
			float l[8] = { 0 }, tail = 0.0f;
			int i = 0;
			for (; i + 8 <= C; i += 8)
				for (int k = 0; k < 8; k++)
					l[k] += p[i + k] * q[i + k];
			for (; i < C; i++)
				tail += p[i] * q[i];
			float d = ((l[0] + l[1]) + (l[2] + l[3])) +
				  ((l[4] + l[5]) + (l[6] + l[7])) + tail;
			out[(size_t)n * OC + o] = (b ? b[o] : 0.0f) + d;
		}
}

static void matmul_backward_twin(float *dx, float *dw, float *db, const float *dout, const float *x,
	const float *w, int N, int C, int OC)
{
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			for (int o = 0; o < OC; o++)
				dx[(size_t)n * C + c] +=
					dout[(size_t)n * OC + o] * w[(size_t)o * C + c];
	for (int o = 0; o < OC; o++) {
		for (int c = 0; c < C; c++)
			for (int n = 0; n < N; n++)
				dw[(size_t)o * C + c] +=
					dout[(size_t)n * OC + o] * x[(size_t)n * C + c];
		float s = 0.0f;
		for (int n = 0; n < N; n++)
			s += dout[(size_t)n * OC + o];
		db[o] += s;
	}
}

/* The blocked, register-tiled (and, on AVX2 CPUs, vectorised) matmuls give the plain loops'
 * bits: shapes with whole tiles, ragged edges, and more than one k pass (K > 256). */
Test(layers, blocked_matmul_gives_the_plain_loops_bits)
{
	int shapes[][3] = { { 96, 48, 48 }, { 97, 301, 53 }, { 300, 40, 290 }, { 7, 5, 3 },
		{ 130, 520, 70 } };
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
		float *x = randn((size_t)N * C, 1), *w = randn((size_t)OC * C, 1),
		      *b = randn(OC, 1);
		float *dout = randn((size_t)N * OC, 1);
		float *out[2], *dx[2], *dw[2], *db[2];
		for (int k = 0; k < 2; k++) {
			out[k] = zeros((size_t)N * OC);
			dx[k] = zeros((size_t)N * C), dw[k] = zeros((size_t)OC * C),
			db[k] = zeros(OC);
			for (size_t i = 0; i < (size_t)N * C; i++)
				dx[k][i] = 0.5f; /* an old value to add to */
		}
		matmul_forward(out[0], x, w, s % 2 ? NULL : b, N, C, OC);
		matmul_forward_twin(out[1], x, w, s % 2 ? NULL : b, N, C, OC);
		matmul_backward(dx[0], dw[0], db[0], dout, x, w, N, C, OC);
		matmul_backward_twin(dx[1], dw[1], db[1], dout, x, w, N, C, OC);
		cr_assert(memcmp(out[0], out[1], sizeof(float) * N * OC) == 0,
			"forward N %d C %d OC %d", N, C, OC);
		cr_assert(memcmp(dx[0], dx[1], sizeof(float) * N * C) == 0, "dinp N %d C %d OC %d",
			N, C, OC);
		cr_assert(memcmp(dw[0], dw[1], sizeof(float) * OC * C) == 0,
			"dweight N %d C %d OC %d", N, C, OC);
		cr_assert(memcmp(db[0], db[1], sizeof(float) * OC) == 0, "dbias N %d C %d OC %d", N,
			C, OC);
		for (int k = 0; k < 2; k++)
			free(out[k]), free(dx[k]), free(dw[k]), free(db[k]);
		free(x), free(w), free(b), free(dout);
	}
}

Test(layers, backward_accumulates_into_existing_gradients)
{
	int N = 5, C = 7, OC = 3;
	float *x = randn(N * C, 1), *w = randn(OC * C, 1), *dout = randn(N * OC, 1);
	float *dx0 = zeros(N * C), *dw0 = zeros(OC * C), *db0 = zeros(OC);
	float *dx1 = zeros(N * C), *dw1 = zeros(OC * C), *db1 = zeros(OC);
	for (int i = 0; i < N * C; i++)
		dx1[i] = 1.5f;
	for (int i = 0; i < OC * C; i++)
		dw1[i] = -2.0f;
	for (int i = 0; i < OC; i++)
		db1[i] = 0.25f;
	matmul_backward(dx0, dw0, db0, dout, x, w, N, C, OC);
	matmul_backward(dx1, dw1, db1, dout, x, w, N, C, OC);
	for (int i = 0; i < N * C; i++)
		cr_assert_float_eq(dx1[i], dx0[i] + 1.5f, 1e-5);
	for (int i = 0; i < OC * C; i++)
		cr_assert_float_eq(dw1[i], dw0[i] - 2.0f, 1e-5);
	for (int i = 0; i < OC; i++)
		cr_assert_float_eq(db1[i], db0[i] + 0.25f, 1e-5);
	free(x), free(w), free(dout), free(dx0), free(dw0), free(db0), free(dx1), free(dw1),
		free(db1);
}

/* ---- layernorm ---- */

static void layernorm_fwd(struct fd_case *c)
{
	layernorm_forward(c->out, c->ctx[3], c->ctx[4], c->ctx[0], c->ctx[1], c->ctx[2], c->dims[0],
		c->dims[1]);
}

Test(layers, layernorm_forward_matches_a_double_precision_twin)
{
	int N = 6, C = 19;
	float *x = randn(N * C, 2), *w = randn(C, 1), *b = randn(C, 1);
	float *out = zeros(N * C), *mean = zeros(N), *rstd = zeros(N);
	layernorm_forward(out, mean, rstd, x, w, b, N, C);
	for (int n = 0; n < N; n++) {
		double m = 0, v = 0;
		for (int i = 0; i < C; i++)
			m += x[n * C + i];
		m /= C;
		for (int i = 0; i < C; i++)
			v += (x[n * C + i] - m) * (x[n * C + i] - m);
		v /= C;
		for (int i = 0; i < C; i++) {
			double want = (x[n * C + i] - m) / sqrt(v + 1e-5) * w[i] + b[i];
			cr_assert_float_eq(out[n * C + i], want, 1e-4 * (1 + fabs(want)));
		}
	}
	free(x), free(w), free(b), free(out), free(mean), free(rstd);
}

Test(layers, layernorm_backward_matches_finite_differences)
{
	for (int trial = 0; trial < 4; trial++) {
		int N = rnd_int(1, 8), C = rnd_int(2, 24);
		float *x = randn((size_t)N * C, 1), *w = randn(C, 1), *b = randn(C, 1);
		float *out = zeros((size_t)N * C), *mean = zeros(N), *rstd = zeros(N);
		float *dout = randn((size_t)N * C, 1);
		float *dx = zeros((size_t)N * C), *dw = zeros(C), *db = zeros(C);
		struct fd_case c = { layernorm_fwd, out, (size_t)N * C, dout,
			{ x, w, b, mean, rstd }, { N, C } };
		layernorm_forward(out, mean, rstd, x, w, b, N, C);
		layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
		check_grad("dinp", &c, x, dx, (size_t)N * C, 1e-2f, 2e-3, 1e-2);
		check_grad("dweight", &c, w, dw, C, 1e-2f, 2e-3, 1e-2);
		check_grad("dbias", &c, b, db, C, 1e-2f, 2e-3, 1e-2);
		free(x), free(w), free(b), free(out), free(mean), free(rstd), free(dout), free(dx),
			free(dw), free(db);
	}
}

/* ---- attention ---- */

static void attention_fwd(struct fd_case *c)
{
	attention_forward(c->out, c->ctx[1], c->ctx[0], c->dims[0], c->dims[1], c->dims[2],
		c->dims[3]);
}

Test(layers, attention_forward_matches_a_causal_double_precision_twin)
{
	int B = 2, T = 7, NH = 3, hs = 4, C = NH * hs;
	float *qkv = randn((size_t)B * T * 3 * C, 1), *out = zeros(B * T * C);
	float *att = zeros((size_t)B * NH * T * T);
	attention_forward(out, att, qkv, B, T, C, NH);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T; t++) {
				const float *q = qkv + (b * T + t) * 3 * C + h * hs;
				double s[16], mx = -1e300, sum = 0;
				for (int u = 0; u <= t; u++) {
					const float *k = qkv + (b * T + u) * 3 * C + C + h * hs;
					s[u] = 0;
					for (int i = 0; i < hs; i++)
						s[u] += (double)q[i] * k[i];
					s[u] /= sqrt(hs);
					mx = fmax(mx, s[u]);
				}
				for (int u = 0; u <= t; u++)
					sum += exp(s[u] - mx);
				for (int i = 0; i < hs; i++) {
					double o = 0;
					for (int u = 0; u <= t; u++)
						o += exp(s[u] - mx) / sum *
						     qkv[(b * T + u) * 3 * C + 2 * C + h * hs + i];
					cr_assert_float_eq(out[(b * T + t) * C + h * hs + i], o,
						1e-5);
				}
				for (int u = t + 1; u < T; u++) /* nothing from the future */
					cr_assert_eq(att[((b * NH + h) * T + t) * T + u], 0.0f);
			}
	free(qkv), free(out), free(att);
}

Test(layers, attention_backward_matches_finite_differences)
{
	for (int trial = 0; trial < 3; trial++) {
		int B = rnd_int(1, 2), T = rnd_int(1, 9), NH = rnd_int(1, 3), hs = rnd_int(1, 6);
		int C = NH * hs;
		size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
		float *qkv = randn(nq, 1), *out = zeros(no), *att = zeros((size_t)B * NH * T * T);
		float *dout = randn(no, 1), *dqkv = zeros(nq);
		struct fd_case c = { attention_fwd, out, no, dout, { qkv, att }, { B, T, C, NH } };
		attention_forward(out, att, qkv, B, T, C, NH);
		attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
		check_grad("dqkv", &c, qkv, dqkv, nq, 1e-2f, 2e-3, 1e-2);
		free(qkv), free(out), free(att), free(dout), free(dqkv);
	}
}

/* ---- gelu, residual, encoder ---- */

static void gelu_fwd(struct fd_case *c)
{
	gelu_forward(c->out, c->ctx[0], c->dims[0]);
}

Test(layers, gelu_matches_the_tanh_formula_and_finite_differences)
{
	int n = 257;
	float *x = randn(n, 2), *out = zeros(n), *dout = randn(n, 1), *dx = zeros(n);
	gelu_forward(out, x, n);
	for (int i = 0; i < n; i++) {
		double v = x[i];
		double want = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
		cr_assert_float_eq(out[i], want, 1e-5 * (1 + fabs(want)));
	}
	struct fd_case c = { gelu_fwd, out, n, dout, { x }, { n } };
	gelu_backward(dx, x, dout, n);
	check_grad("dinp", &c, x, dx, n, 1e-2f, 1e-3, 1e-2);
	free(x), free(out), free(dout), free(dx);
}

static void residual_fwd(struct fd_case *c)
{
	residual_forward(c->out, c->ctx[0], c->ctx[1], c->dims[0]);
}

Test(layers, residual_backward_matches_finite_differences)
{
	int n = rnd_int(1, 100);
	float *a = randn(n, 1), *b = randn(n, 1), *out = zeros(n), *dout = randn(n, 1);
	float *da = zeros(n), *db = zeros(n);
	residual_forward(out, a, b, n);
	for (int i = 0; i < n; i++)
		cr_assert_float_eq(out[i], (double)a[i] + b[i], 1e-6);
	residual_backward(da, db, dout, n);
	struct fd_case c = { residual_fwd, out, n, dout, { a, b }, { n } };
	check_grad("da", &c, a, da, n, 1e-2f, 1e-4, 1e-3);
	check_grad("db", &c, b, db, n, 1e-2f, 1e-4, 1e-3);
	free(a), free(b), free(out), free(dout), free(da), free(db);
}

static void encoder_fwd(struct fd_case *c)
{
	encoder_forward(c->out, c->ctx[2], c->ctx[0], c->ctx[1], c->dims[0], c->dims[1],
		c->dims[2]);
}

Test(layers, encoder_backward_matches_finite_differences_with_repeated_tokens)
{
	int B = 3, T = 5, C = 6, V = 4; /* 15 positions, 4 tokens: repeats are certain */
	int32_t inp[15];
	for (int i = 0; i < B * T; i++)
		inp[i] = (int32_t)(rnd() % V);
	float *wte = randn(V * C, 1), *wpe = randn(T * C, 1), *out = zeros(B * T * C);
	float *dout = randn(B * T * C, 1), *dwte = zeros(V * C), *dwpe = zeros(T * C);
	encoder_forward(out, inp, wte, wpe, B, T, C);
	for (int i = 0; i < B * T; i++)
		for (int k = 0; k < C; k++)
			cr_assert_float_eq(out[i * C + k],
				(double)wte[inp[i] * C + k] + wpe[(i % T) * C + k], 1e-6);
	encoder_backward(dwte, dwpe, dout, inp, B, T, C);
	struct fd_case c = { encoder_fwd, out, B * T * C, dout, { wte, wpe, inp }, { B, T, C } };
	check_grad("dwte", &c, wte, dwte, V * C, 1e-2f, 1e-4, 1e-3);
	check_grad("dwpe", &c, wpe, dwpe, T * C, 1e-2f, 1e-4, 1e-3);
	free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe);
}

/* ---- softmax + cross-entropy ---- */

static void softmax_fwd(struct fd_case *c)
{
	softmax_crossentropy_forward(c->out, c->ctx[1], c->ctx[0], c->ctx[2], c->dims[0],
		c->dims[1], c->dims[2]);
}

Test(layers, softmax_crossentropy_matches_log_sum_exp_and_finite_differences)
{
	for (int trial = 0; trial < 3; trial++) {
		int N = rnd_int(1, 6), V = rnd_int(2, 40),
		    Vp = V + (trial == 0 ? 0 : rnd_int(1, 9));
		int32_t targets[6];
		for (int i = 0; i < N; i++)
			targets[i] = (int32_t)(rnd() % V);
		float *z = randn((size_t)N * Vp, 3), *probs = zeros((size_t)N * Vp);
		float *losses = zeros(N), *dl = randn(N, 1), *dz = zeros((size_t)N * Vp);
		softmax_crossentropy_forward(losses, probs, z, targets, N, V, Vp);
		for (int n = 0; n < N; n++) {
			double mx = -1e300, s = 0;
			for (int i = 0; i < V; i++)
				mx = fmax(mx, z[n * Vp + i]);
			for (int i = 0; i < V; i++)
				s += exp(z[n * Vp + i] - mx);
			double want = log(s) + mx - z[n * Vp + targets[n]];
			cr_assert_float_eq(losses[n], want, 1e-5 * (1 + want));
			for (int i = V; i < Vp; i++)
				cr_assert_eq(probs[n * Vp + i], 0.0f,
					"padded column has probability");
		}
		softmax_crossentropy_backward(dz, probs, targets, dl, N, V, Vp);
		for (int n = 0; n < N; n++)
			for (int i = V; i < Vp; i++)
				cr_assert_eq(dz[n * Vp + i], 0.0f, "padded column has a gradient");
		struct fd_case c = { softmax_fwd, losses, N, dl, { z, probs, targets },
			{ N, V, Vp } };
		check_grad("dlogits", &c, z, dz, (size_t)N * Vp, 1e-2f, 1e-3, 1e-2);
		free(z), free(probs), free(losses), free(dl), free(dz);
	}
}

Test(layers, results_do_not_depend_on_the_number_of_threads)
{
#ifndef _OPENMP
	cr_skip_test("built without OpenMP");
#else
	int B = 2, T = 33, NH = 2, C = 16, N = B * T;
	/* the matmuls on a shape of many blocks, so that threads split them */
	int NM = 200, CM = 300, OC = 150;
	float *qkv = randn((size_t)N * 3 * C, 1), *dout = randn((size_t)N * C, 1);
	float *x = randn((size_t)NM * CM, 1), *w = randn((size_t)OC * CM, 1);
	float *d2 = randn((size_t)NM * OC, 1);
	float *out[2], *att[2], *dqkv[2], *mm[2], *dx[2], *dw[2];
	for (int k = 0; k < 2; k++) {
		omp_set_num_threads(k == 0 ? 1 : 3);
		out[k] = zeros((size_t)N * C), att[k] = zeros((size_t)B * NH * T * T);
		dqkv[k] = zeros((size_t)N * 3 * C), mm[k] = zeros((size_t)NM * OC);
		dx[k] = zeros((size_t)NM * CM), dw[k] = zeros((size_t)OC * CM);
		attention_forward(out[k], att[k], qkv, B, T, C, NH);
		attention_backward(dqkv[k], dout, qkv, att[k], B, T, C, NH);
		matmul_forward(mm[k], x, w, NULL, NM, CM, OC);
		matmul_backward(dx[k], dw[k], NULL, d2, x, w, NM, CM, OC);
	}
	cr_assert(memcmp(out[0], out[1], sizeof(float) * N * C) == 0);
	cr_assert(memcmp(dqkv[0], dqkv[1], sizeof(float) * N * 3 * C) == 0);
	cr_assert(memcmp(mm[0], mm[1], sizeof(float) * NM * OC) == 0);
	cr_assert(memcmp(dx[0], dx[1], sizeof(float) * NM * CM) == 0);
	cr_assert(memcmp(dw[0], dw[1], sizeof(float) * OC * CM) == 0);
	for (int k = 0; k < 2; k++) {
		free(out[k]), free(att[k]), free(dqkv[k]);
		free(mm[k]), free(dx[k]), free(dw[k]);
	}
	free(qkv), free(dout), free(x), free(w), free(d2);
#endif
}
