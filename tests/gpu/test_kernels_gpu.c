/* tests/gpu/: each CUDA kernel of kernels/ against its CPU twin (train/layers.c, model.c) on
 * random inputs, in fp32 and bf16, one table row per tensor. Exits 77 without a GPU. */
#include "tests/gpu/gpu_test.h"

#include "train/layers.h"
#include "train/model.h"

/* limits: fp32 near 1e-5 (longer sums in a different order get more); bf16 outputs are rounded
 * to 8 bits of mantissa (2^-9 relative) on top of bf16 inputs */
static double tol(enum kdtype dt, double f32)
{
	return dt == KDT_F32 ? f32 : 3e-2;
}

static void check(const char *what, enum kdtype dt, const void *d, const float *cpu, size_t n,
	enum kdtype out_dt, double f32_tol)
{
	float *g = hzero(n);
	dev_to(g, d, n, out_dt);
	report(what, kdtype_name(dt), rel_err(g, cpu, n), tol(dt, f32_tol));
	free(g);
}

static void test_encoder(enum kdtype dt, uint64_t *rng)
{
	int B = 4, T = 64, C = 64, V = 250, Vp = 256, N = B * T;
	int32_t *inp = malloc(N * 4);
	for (int i = 0; i < N; i++)
		inp[i] = (int)((urand(rng) + 1.0f) * 0.5f * 20) % V; /* repeats: sums per token */
	float *wte = hrand((size_t)Vp * C, 1, rng), *wpe = hrand((size_t)T * C, 1, rng);
	void *dwte_ = dev_from(wte, (size_t)Vp * C, dt), *dwpe_ = dev_from(wpe, (size_t)T * C, dt);
	int32_t *dinp;
	CUDA_CHECK(cudaMalloc((void **)&dinp, N * 4));
	CUDA_CHECK(cudaMemcpy(dinp, inp, N * 4, cudaMemcpyHostToDevice));
	float *out = hzero((size_t)N * C);
	void *dout_ = dev_from(out, (size_t)N * C, dt);
	k_encoder_forward(dout_, dinp, dwte_, dwpe_, B, T, C, dt, 0);
	encoder_forward(out, inp, wte, wpe, B, T, C);
	check("encoder_forward out", dt, dout_, out, (size_t)N * C, dt, 1e-6);

	float *dout = hrand((size_t)N * C, 1, rng);
	void *ddout = dev_from(dout, (size_t)N * C, dt);
	float *gwte = hrand((size_t)Vp * C, 1, rng), *gwpe = hrand((size_t)T * C, 1, rng);
	float *dgwte = dev_from(gwte, (size_t)Vp * C, KDT_F32);
	float *dgwpe = dev_from(gwpe, (size_t)T * C, KDT_F32);
	size_t sb = k_encoder_backward_scratch_bytes(B, T, V);
	void *scratch;
	CUDA_CHECK(cudaMalloc(&scratch, sb));
	k_encoder_backward(dgwte, dgwpe, ddout, dinp, B, T, C, V, scratch, sb, dt, 0);
	encoder_backward(gwte, gwpe, dout, inp, B, T, C);
	check("encoder_backward dwte (+=)", dt, dgwte, gwte, (size_t)Vp * C, KDT_F32, 1e-6);
	check("encoder_backward dwpe (+=)", dt, dgwpe, gwpe, (size_t)T * C, KDT_F32, 1e-6);
	cudaFree(scratch);
	cudaFree(dinp);
	cudaFree(dwte_), cudaFree(dwpe_), cudaFree(dout_), cudaFree(ddout), cudaFree(dgwte),
		cudaFree(dgwpe);
	free(inp), free(wte), free(wpe), free(out), free(dout), free(gwte), free(gwpe);
}

static void test_layernorm(enum kdtype dt, uint64_t *rng)
{
	int N = 300, C = 128;
	size_t n = (size_t)N * C;
	float *a = hrand(n, 2, rng), *b = hrand(n, 1, rng);
	float *w = hrand(C, 1, rng), *bias = hrand(C, 1, rng);
	void *da = dev_from(a, n, dt), *db = dev_from(b, n, dt);
	void *dw = dev_from(w, C, dt), *dbias = dev_from(bias, C, dt);
	float *res = hzero(n), *out = hzero(n), *mean = hzero(N), *rstd = hzero(N);
	void *dres = dev_from(res, n, dt), *dout = dev_from(out, n, dt);
	float *dmean = dev_from(mean, N, KDT_F32), *drstd = dev_from(rstd, N, KDT_F32);

	k_layernorm_forward(dout, dmean, drstd, da, dw, dbias, N, C, dt, 0);
	layernorm_forward(out, mean, rstd, a, w, bias, N, C);
	check("layernorm_forward out", dt, dout, out, n, dt, 1e-5);
	check("layernorm_forward rstd", dt, drstd, rstd, N, KDT_F32, 1e-5);

	k_residual_layernorm_forward(dres, dout, dmean, drstd, da, db, dw, dbias, N, C, dt, 0);
	residual_forward(res, a, b, (int)n);
	if (dt == KDT_BF16) /* the kernel normalises the rounded sum: give the twin the same */
		cudaFree(dev_from(res, n, dt));
	layernorm_forward(out, mean, rstd, res, w, bias, N, C);
	check("residual_layernorm_forward residual", dt, dres, res, n, dt, 1e-6);
	check("residual_layernorm_forward out", dt, dout, out, n, dt, 1e-5);
	check("residual_layernorm_forward mean", dt, dmean, mean, N, KDT_F32, 1e-5);

	float *g = hrand(n, 1, rng), *dinp = hrand(n, 1, rng);
	float *gw = hrand(C, 1, rng), *gb = hrand(C, 1, rng);
	void *dg = dev_from(g, n, dt), *ddinp = dev_from(dinp, n, dt);
	float *dgw = dev_from(gw, C, KDT_F32), *dgb = dev_from(gb, C, KDT_F32);
	float *scratch;
	CUDA_CHECK(cudaMalloc((void **)&scratch, k_layernorm_backward_scratch_floats(N, C) * 4));
	k_layernorm_backward(ddinp, dgw, dgb, dg, dres, dw, dmean, drstd, scratch, N, C, dt, 0);
	layernorm_backward(dinp, gw, gb, g, res, w, mean, rstd, N, C);
	check("layernorm_backward dinp (+=)", dt, ddinp, dinp, n, dt, 1e-5);
	check("layernorm_backward dweight (+=)", dt, dgw, gw, C, KDT_F32, 1e-5);
	check("layernorm_backward dbias (+=)", dt, dgb, gb, C, KDT_F32, 1e-5);
	cudaFree(scratch);
	void *fr[] = { da, db, dw, dbias, dres, dout, dmean, drstd, dg, ddinp, dgw, dgb };
	for (size_t i = 0; i < sizeof(fr) / sizeof(fr[0]); i++)
		cudaFree(fr[i]);
	float *hf[] = { a, b, w, bias, res, out, mean, rstd, g, dinp, gw, gb };
	for (size_t i = 0; i < sizeof(hf) / sizeof(hf[0]); i++)
		free(hf[i]);
}

static void test_gelu(enum kdtype dt, uint64_t *rng)
{
	size_t n = 5000;
	float *x = hrand(n, 4, rng), *y = hzero(n), *dy = hrand(n, 1, rng), *dx = hzero(n);
	void *dxv = dev_from(x, n, dt), *dyv = dev_from(y, n, dt), *ddy = dev_from(dy, n, dt);
	k_gelu_forward(dyv, dxv, n, dt, 0);
	gelu_forward(y, x, (int)n);
	check("gelu_forward", dt, dyv, y, n, dt, 1e-5);
	k_gelu_backward(ddy, dxv, ddy, n, dt, 0); /* in place, as the trainer runs it */
	gelu_backward(dx, x, dy, (int)n);
	check("gelu_backward (in place)", dt, ddy, dx, n, dt, 1e-5);
	cudaFree(dxv), cudaFree(dyv), cudaFree(ddy);
	free(x), free(y), free(dy), free(dx);
}

static void test_matmul(struct kmatmul *h, enum kdtype dt, uint64_t *rng)
{
	int N = 128, C = 64, OC = 192;
	float *inp = hrand((size_t)N * C, 1, rng), *w = hrand((size_t)OC * C, 0.2f, rng);
	float *bias = hrand(OC, 1, rng), *out = hzero((size_t)N * OC), *pre = hzero((size_t)N * OC);
	void *dinp_ = dev_from(inp, (size_t)N * C, dt), *dw = dev_from(w, (size_t)OC * C, dt);
	void *db = dev_from(bias, OC, dt), *dout = dev_from(out, (size_t)N * OC, dt);
	void *dpre = dev_from(pre, (size_t)N * OC, dt);
	k_matmul_forward(h, dout, NULL, dinp_, dw, db, N, C, OC, dt, 0);
	matmul_forward(out, inp, w, bias, N, C, OC);
	check("matmul_forward (bias epilogue)", dt, dout, out, (size_t)N * OC, dt, 1e-5);
	k_matmul_forward(h, dout, dpre, dinp_, dw, db, N, C, OC, dt, 0);
	gelu_forward(pre, out, N * OC);
	check("matmul_forward (gelu epilogue) pre", dt, dpre, out, (size_t)N * OC, dt, 1e-5);
	check("matmul_forward (gelu epilogue) out", dt, dout, pre, (size_t)N * OC, dt, 1e-4);

	float *g = hrand((size_t)N * OC, 1, rng), *gin = hzero((size_t)N * C);
	float *gw = hrand((size_t)OC * C, 1, rng), *gb = hrand(OC, 1, rng);
	void *dg = dev_from(g, (size_t)N * OC, dt), *dgin = dev_from(gin, (size_t)N * C, dt);
	float *dgw = dev_from(gw, (size_t)OC * C, KDT_F32), *dgb = dev_from(gb, OC, KDT_F32);
	float *scratch;
	CUDA_CHECK(cudaMalloc((void **)&scratch, k_bias_backward_scratch_floats(N, OC) * 4));
	k_matmul_backward(h, dgin, dgw, dgb, dg, dinp_, dw, scratch, N, C, OC, dt, 0);
	matmul_backward(gin, gw, gb, g, inp, w, N, C, OC);
	check("matmul_backward dinp", dt, dgin, gin, (size_t)N * C, dt, 1e-5);
	check("matmul_backward dweight (+=)", dt, dgw, gw, (size_t)OC * C, KDT_F32, 1e-5);
	check("matmul_backward dbias (+=)", dt, dgb, gb, OC, KDT_F32, 1e-5);
	cudaFree(scratch);
	void *fr[] = { dinp_, dw, db, dout, dpre, dg, dgin, dgw, dgb };
	for (size_t i = 0; i < sizeof(fr) / sizeof(fr[0]); i++)
		cudaFree(fr[i]);
	float *hf[] = { inp, w, bias, out, pre, g, gin, gw, gb };
	for (size_t i = 0; i < sizeof(hf) / sizeof(hf[0]); i++)
		free(hf[i]);
}

/* The tensor-core kernels on the inputs test_attention gave the others: the forward's output
 * against the CPU's, its log-sum-exp against the CUDA-core kernel's (lse, the oracle), and both
 * backwards fed with it against the CPU's gradient. */
static void test_attention_tc(enum kdtype dt, int B, int T, int C, int NH, const void *dq,
	const void *dg, const float *lse, const float *cpu_out, const float *cpu_dqkv)
{
	size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
	void *dout, *ddqkv;
	float *lse_tc, *delta, *h_lse = hzero(nl), *h_lse_tc = hzero(nl);
	char name[64];
	CUDA_CHECK(cudaMalloc(&dout, no * kdtype_bytes(dt)));
	CUDA_CHECK(cudaMalloc(&ddqkv, nq * kdtype_bytes(dt)));
	CUDA_CHECK(cudaMalloc((void **)&lse_tc, nl * 4));
	CUDA_CHECK(cudaMalloc((void **)&delta, nl * 4));
	k_attention_forward_tc(dout, lse_tc, dq, B, T, C, NH, dt, 0);
	snprintf(name, sizeof(name), "attention_forward_tc hs=%d", C / NH);
	check(name, dt, dout, cpu_out, no, dt, 0.0);
	CUDA_CHECK(cudaMemcpy(h_lse, lse, nl * 4, cudaMemcpyDeviceToHost));
	CUDA_CHECK(cudaMemcpy(h_lse_tc, lse_tc, nl * 4, cudaMemcpyDeviceToHost));
	snprintf(name, sizeof(name), "attention_forward_tc lse hs=%d", C / NH);
	report(name, kdtype_name(dt), rel_err(h_lse_tc, h_lse, nl), 1e-4);
	k_attention_backward(ddqkv, delta, dg, dq, dout, lse_tc, B, T, C, NH, dt, 0);
	snprintf(name, sizeof(name), "attention_backward after tc hs=%d", C / NH);
	check(name, dt, ddqkv, cpu_dqkv, nq, dt, 0.0);
	k_attention_backward_tc(ddqkv, delta, dg, dq, dout, lse_tc, B, T, C, NH, dt, 0);
	snprintf(name, sizeof(name), "attention_backward_tc dqkv hs=%d", C / NH);
	check(name, dt, ddqkv, cpu_dqkv, nq, dt, 0.0);
	cudaFree(dout), cudaFree(ddqkv), cudaFree(lse_tc), cudaFree(delta);
	free(h_lse), free(h_lse_tc);
}

static void test_attention(enum kdtype dt, int C, int NH, uint64_t *rng)
{
	int B = 2, T = 80; /* T not a multiple of the 32-row tile */
	size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
	float *qkv = hrand(nq, 1, rng), *out = hzero(no), *att = hzero((size_t)B * NH * T * T);
	float *g = hrand(no, 1, rng), *dqkv = hzero(nq);
	void *dq = dev_from(qkv, nq, dt), *dout = dev_from(out, no, dt), *dg = dev_from(g, no, dt);
	void *ddqkv = dev_from(dqkv, nq, dt);
	float *lse, *delta;
	CUDA_CHECK(cudaMalloc((void **)&lse, (size_t)B * NH * T * 4));
	CUDA_CHECK(cudaMalloc((void **)&delta, (size_t)B * NH * T * 4));
	char name[64];
	k_attention_forward(dout, lse, dq, B, T, C, NH, dt, 0);
	attention_forward(out, att, qkv, B, T, C, NH);
	snprintf(name, sizeof(name), "attention_forward hs=%d", C / NH);
	check(name, dt, dout, out, no, dt, 1e-5);
	k_attention_backward(ddqkv, delta, dg, dq, dout, lse, B, T, C, NH, dt, 0);
	attention_backward(dqkv, g, qkv, att, B, T, C, NH);
	snprintf(name, sizeof(name), "attention_backward dqkv hs=%d", C / NH);
	check(name, dt, ddqkv, dqkv, nq, dt, 2e-5);
	if (k_attention_tc_supported(C, NH, dt))
		test_attention_tc(dt, B, T, C, NH, dq, dg, lse, out, dqkv);
	cudaFree(dq), cudaFree(dout), cudaFree(dg), cudaFree(ddqkv), cudaFree(lse), cudaFree(delta);
	free(qkv), free(out), free(att), free(g), free(dqkv);
}

static void test_crossentropy(enum kdtype dt, uint64_t *rng)
{
	int N = 64, V = 250, Vp = 256;
	size_t n = (size_t)N * Vp;
	float *z = hrand(n, 4, rng), *probs = hzero(n), *dz = hzero(n), *losses = hzero(N);
	float *dl = hzero(N);
	int32_t *tg = malloc(N * 4), *dtg;
	for (int i = 0; i < N; i++)
		tg[i] = (int)((urand(rng) + 1.0f) * 0.5f * V) % V;
	void *dzv = dev_from(z, n, dt);
	float *dlosses = dev_from(losses, N, KDT_F32);
	CUDA_CHECK(cudaMalloc((void **)&dtg, N * 4));
	CUDA_CHECK(cudaMemcpy(dtg, tg, N * 4, cudaMemcpyHostToDevice));
	float scale = 1.0f / N;
	for (int i = 0; i < N; i++)
		dl[i] = scale;
	k_crossentropy(dzv, dlosses, dtg, scale, 1, N, V, Vp, dt, 0);
	softmax_crossentropy_forward(losses, probs, z, tg, N, V, Vp);
	softmax_crossentropy_backward(dz, probs, tg, dl, N, V, Vp);
	check("crossentropy losses", dt, dlosses, losses, N, KDT_F32, 1e-5);
	check("crossentropy dlogits (in place)", dt, dzv, dz, n, dt, 1e-5);
	double *acc;
	CUDA_CHECK(cudaMalloc((void **)&acc, 8));
	CUDA_CHECK(cudaMemset(acc, 0, 8));
	k_loss_accumulate(acc, dlosses, N, 0);
	double got, want = 0.0;
	CUDA_CHECK(cudaMemcpy(&got, acc, 8, cudaMemcpyDeviceToHost));
	for (int i = 0; i < N; i++)
		want += losses[i];
	want /= N;
	report("loss_accumulate mean", kdtype_name(dt), fabs(got - want) / fabs(want),
		tol(dt, 1e-6));
	cudaFree(acc), cudaFree(dzv), cudaFree(dlosses), cudaFree(dtg);
	free(z), free(probs), free(dz), free(losses), free(dl), free(tg);
}

/* norm, clipping and AdamW on a small model's parameter block against gpt2_grad_norm and
 * gpt2_update, three steps, the second one clipped */
/* Tensor parallelism: the bias added once after a row-parallel matmul's all-reduce, against
 * model.c's add_bias (static there: its loop, written out here). The inputs are rounded to dt
 * first, so that only the kernel's own rounding of the sum is measured. */
static void test_add_bias(enum kdtype dt, uint64_t *rng)
{
	int N = 100, OC = 96;
	size_t n = (size_t)N * OC;
	float *out = hrand(n, 1, rng), *bias = hrand(OC, 1, rng);
	void *dout = dev_from(out, n, dt), *db = dev_from(bias, OC, dt);
	dev_to(out, dout, n, dt);
	dev_to(bias, db, OC, dt);
	k_add_bias(dout, db, N, OC, dt, 0);
	for (int i = 0; i < N; i++)
		for (int o = 0; o < OC; o++)
			out[(size_t)i * OC + o] += bias[o];
	check("add_bias out (+=)", dt, dout, out, n, dt, 0.0);
	cudaFree(dout), cudaFree(db);
	free(out), free(bias);
}

/* A tensor rank's part of the whole model's sum of squares over [lo, hi): the ranges the GPU
 * trainer gives k_sum_squares_ranges (every shard, the replicated tensors on tensor rank 0
 * only, adjacent ones merged, as gpt_cuda.cu's tp_norm_ranges) against gpt2_sum_squares_tp. */
static void test_sum_squares_ranges(uint64_t *rng)
{
	struct gpt2_config c = { 16, 32, 32, 2, 2, 16 };
	for (int t = 0; t < 2; t++) {
		struct gpt2_tp tp = { 2, t, NULL, NULL };
		struct gpt2 *m = gpt2_new_tp(&c, 1, 4, &tp);
		size_t P = m->nr_params, offs[K_NORM_RANGES], lens[K_NORM_RANGES];
		size_t bounds[2][2] = { { 0, P }, { P / 3, P - P / 5 } }; /* whole; a ZeRO slice */
		for (size_t i = 0; i < P; i++)
			m->grads_memory[i] = urand(rng);
		float *dg = dev_from(m->grads_memory, P, KDT_F32), *dout, got;
		double *scratch;
		CUDA_CHECK(cudaMalloc((void **)&dout, 4));
		CUDA_CHECK(cudaMalloc((void **)&scratch, K_NORM_RANGES * K_NORM_BLOCKS * 8));
		for (int b = 0; b < 2; b++) {
			size_t lo = bounds[b][0], hi = bounds[b][1], off = 0;
			int nr = 0;
			for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
				size_t a = off > lo ? off : lo;
				size_t e =
					off + m->param_sizes[k] < hi ? off + m->param_sizes[k] : hi;
				off += m->param_sizes[k];
				if (a >= e || (!gpt2_param_is_sharded(k) && t != 0))
					continue;
				if (nr > 0 && offs[nr - 1] + lens[nr - 1] == a) {
					lens[nr - 1] += e - a;
					continue;
				}
				offs[nr] = a;
				lens[nr++] = e - a;
			}
			k_sum_squares_ranges(dout, dg, offs, lens, nr, scratch, 0);
			CUDA_CHECK(cudaMemcpy(&got, dout, 4, cudaMemcpyDeviceToHost));
			double want = gpt2_sum_squares_tp(m, m->grads_memory + lo, lo, hi);
			char name[64];
			snprintf(name, sizeof(name), "sum_squares_ranges tp 2 rank %d %s", t,
				b ? "slice" : "whole");
			report(name, "f32", fabs(got - want) / want, 1e-6);
		}
		cudaFree(dg), cudaFree(dout), cudaFree(scratch);
		gpt2_free(m);
	}
}

static void test_optimizer(enum kdtype dt, uint64_t *rng)
{
	struct gpt2_config c = { 16, 32, 32, 2, 2, 16 };
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	size_t P = m->nr_params;
	for (size_t i = 0; i < P; i++)
		m->params_memory[i] = urand(rng);
	float *dmaster = dev_from(m->params_memory, P, KDT_F32);
	float *dgrads, *dm, *dv, *ns, *hp;
	void *dparams;
	double *scratch;
	CUDA_CHECK(cudaMalloc((void **)&dgrads, P * 4));
	CUDA_CHECK(cudaMalloc((void **)&dm, P * 4));
	CUDA_CHECK(cudaMalloc((void **)&dv, P * 4));
	CUDA_CHECK(cudaMalloc(&dparams, P * 4));
	CUDA_CHECK(cudaMemset(dm, 0, P * 4));
	CUDA_CHECK(cudaMemset(dv, 0, P * 4));
	CUDA_CHECK(cudaMalloc((void **)&ns, 8));
	CUDA_CHECK(cudaMalloc((void **)&hp, 12));
	CUDA_CHECK(cudaMalloc((void **)&scratch, K_NORM_BLOCKS * 8));
	struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
	float clip = 1.0f;
	for (int t = 1; t <= 3; t++) {
		float gscale = t == 2 ? 3.0f : 0.01f; /* step 2 exceeds the clip */
		for (size_t i = 0; i < P; i++)
			m->grads_memory[i] = urand(rng) * gscale;
		CUDA_CHECK(cudaMemcpy(dgrads, m->grads_memory, P * 4, cudaMemcpyHostToDevice));
		float norm = gpt2_grad_norm(m);
		float cs = norm > clip ? clip / norm : 1.0f;
		float lr = 1e-3f;
		float h[3] = { lr, 1.0f - powf(opt.beta1, (float)t),
			1.0f - powf(opt.beta2, (float)t) };
		CUDA_CHECK(cudaMemcpy(hp, h, 12, cudaMemcpyHostToDevice));
		k_global_norm(ns, dgrads, P, clip, 1, scratch, 0);
		size_t off = 0;
		for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
			float wd = gpt2_param_is_decayed(k) ? opt.weight_decay : 0.0f;
			k_adamw(dmaster + off, (char *)dparams + off * kdtype_bytes(dt), dt,
				dgrads + off, dm + off, dv + off, m->param_sizes[k], hp, ns + 1,
				opt.beta1, opt.beta2, opt.eps, wd, 0);
			off += m->param_sizes[k];
		}
		gpt2_update(m, &opt, lr, cs, t);
		float got[2];
		CUDA_CHECK(cudaMemcpy(got, ns, 8, cudaMemcpyDeviceToHost));
		char name[64];
		snprintf(name, sizeof(name), "global_norm step %d", t);
		report(name, kdtype_name(dt), fabs(got[0] - norm) / norm, 1e-6);
		/* The master weights are fp32 in both passes: an fp32 limit, not tol(dt), under
		 * which a bf16 pass would pass even if no update ran (a step moves them ~lr). */
		float *gm = hzero(P);
		dev_to(gm, dmaster, P, KDT_F32);
		snprintf(name, sizeof(name), "adamw master weights step %d", t);
		report(name, kdtype_name(dt), rel_err(gm, m->params_memory, P), 1e-6);
		free(gm);
	}
	float *w = hzero(P);
	dev_to(w, dparams, P, dt);
	/* the working copy is the master weights rounded to dt */
	float *master = hzero(P);
	dev_to(master, dmaster, P, KDT_F32);
	cudaFree(dev_from(master, P, dt));
	report("adamw working copy = cast(master)", kdtype_name(dt), rel_err(w, master, P), 0.0);
	free(w), free(master);
	cudaFree(dmaster), cudaFree(dgrads), cudaFree(dm), cudaFree(dv), cudaFree(dparams);
	cudaFree(ns), cudaFree(hp), cudaFree(scratch);
	gpt2_free(m);
}

int main(void)
{
	skip_without_gpu("test_kernels_gpu");
	uint64_t rng = 0x9E3779B97F4A7C15ULL;
	struct kmatmul *h = kmatmul_new();
	if (!h) {
		report_kernel_errors();
		return 1;
	}
	table_header();
	for (int d = 0; d < 2; d++) {
		enum kdtype dt = d ? KDT_BF16 : KDT_F32;
		test_encoder(dt, &rng);
		test_layernorm(dt, &rng);
		test_gelu(dt, &rng);
		test_matmul(h, dt, &rng);
		test_attention(dt, 256, 2, &rng); /* head size 128, the largest shared memory */
		test_attention(dt, 128, 2, &rng);
		test_attention(dt, 64, 2, &rng);
		test_attention(dt, 64, 4, &rng);
		test_crossentropy(dt, &rng);
		test_optimizer(dt, &rng);
		test_add_bias(dt, &rng);
	}
	test_sum_squares_ranges(&rng);
	CUDA_CHECK(cudaDeviceSynchronize());
	kmatmul_free(h);
	report_kernel_errors();
	printf("test_kernels_gpu: %d check(s) failed\n", nr_failed);
	return nr_failed ? 1 : 0;
}
