/* Unit tests of train/model.c: the whole model's gradient against finite differences, a tiny
 * model memorising a fixed batch, bit-for-bit determinism, AdamW's decay rule, the gradient
 * norm and the learning-rate schedule; tensor parallelism (shards to and from the whole layout, and
 * T ranks as T threads giving the whole model's loss, gradients and norm). No loader: batches are
 * made here. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "train/model.h"

static struct gpt2_config tiny(int V)
{
	struct gpt2_config c = { .max_seq_len = 16,
		.vocab_size = V,
		.padded_vocab_size = gpt2_padded_vocab(V),
		.nr_layers = 2,
		.nr_heads = 2,
		.channels = 16 };
	return c;
}

static void fixed_batch(int32_t *inp, int32_t *tgt, int n, int V, uint32_t seed)
{
	/* one stream of n+1 tokens: targets are the inputs shifted by one, as from the loader */
	uint32_t x = seed;
	int32_t prev = 0;
	for (int i = 0; i <= n; i++) {
		x = x * 1664525u + 1013904223u;
		int32_t t = (int32_t)((x >> 8) % (uint32_t)V);
		if (i > 0) {
			inp[i - 1] = prev;
			tgt[i - 1] = t;
		}
		prev = t;
	}
}

Test(model, padded_vocab_is_a_multiple_of_128_like_llmc)
{
	cr_assert_eq(gpt2_padded_vocab(256), 256);
	cr_assert_eq(gpt2_padded_vocab(50257), 50304);
	cr_assert_eq(gpt2_padded_vocab(300), 384);
}

Test(model, whole_model_gradient_matches_finite_differences)
{
	int B = 2, T = 5, V = 23;
	struct gpt2_config c = tiny(V);
	c.channels = 8;
	struct gpt2 *m = gpt2_new(&c, B, T);
	cr_assert_not_null(m);
	uint64_t rng = 7;
	gpt2_init_random(m, &rng);
	/* larger weights than GPT-2's init, so that every path carries gradient */
	for (size_t i = 0; i < m->nr_params; i++)
		m->params_memory[i] += 0.1f * rng_normal(&rng);
	int32_t inp[10], tgt[10];
	fixed_batch(inp, tgt, B * T, V, 3);
	gpt2_forward(m, inp, tgt);
	gpt2_zero_grad(m);
	gpt2_backward(m, inp, tgt, 1.0f / (B * T));
	/* a few entries of every tensor; wte only in real-token rows */
	size_t off = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t n = k == 0 ? (size_t)V * c.channels : m->param_sizes[k];
		for (int probe = 0; probe < 6; probe++) {
			size_t i = off + (rng_next(&rng) % n);
			float saved = m->params_memory[i], h = 1e-2f;
			m->params_memory[i] = saved + h;
			gpt2_forward(m, inp, tgt);
			double plus = m->mean_loss;
			m->params_memory[i] = saved - h;
			gpt2_forward(m, inp, tgt);
			double minus = m->mean_loss;
			m->params_memory[i] = saved;
			double fd = (plus - minus) / (2 * h), g = m->grads_memory[i];
			cr_assert(fabs(fd - g) <= 3e-4 + 3e-2 * fabs(fd),
				"tensor %d index %zu: backward %.6g, finite difference %.6g", k,
				i - off, g, fd);
		}
		off += m->param_sizes[k];
	}
	gpt2_free(m);
}

static float train_steps(struct gpt2 *m, const int32_t *inp, const int32_t *tgt, int steps,
	float lr, float *losses)
{
	struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.0f };
	for (int s = 1; s <= steps; s++) {
		gpt2_forward(m, inp, tgt);
		if (losses)
			losses[s - 1] = m->mean_loss;
		gpt2_zero_grad(m);
		gpt2_backward(m, inp, tgt, 1.0f / (m->B * m->T));
		float norm = gpt2_grad_norm(m);
		gpt2_update(m, &opt, lr, norm > 1.0f ? 1.0f / norm : 1.0f, s);
	}
	gpt2_forward(m, inp, tgt);
	return m->mean_loss;
}

Test(model, tiny_model_memorises_a_fixed_batch_in_300_steps, .timeout = 100)
{
	int B = 4, T = 16, V = 256;
	struct gpt2_config c = tiny(V);
	c.channels = 32;
	struct gpt2 *m = gpt2_new(&c, B, T);
	uint64_t rng = 1;
	gpt2_init_random(m, &rng);
	int32_t inp[64], tgt[64];
	fixed_batch(inp, tgt, B * T, V, 11);
	gpt2_forward(m, inp, tgt);
	float first = m->mean_loss;
	cr_assert(fabsf(first - logf(V)) < 0.3f, "initial loss %.3f, ln V %.3f", first, logf(V));
	float last = train_steps(m, inp, tgt, 300, 3e-3f, NULL);
	cr_assert(last <= 0.1f * first, "loss %.4f -> %.4f: less than a 90%% drop", first, last);
	gpt2_free(m);
}

Test(model, same_seed_gives_identical_losses_bit_for_bit_whatever_the_threads)
{
	int B = 2, T = 12, V = 64;
	struct gpt2_config c = tiny(V);
	int32_t inp[24], tgt[24];
	fixed_batch(inp, tgt, B * T, V, 5);
	float losses[2][8];
	float *params[2];
	for (int run = 0; run < 2; run++) {
#ifdef _OPENMP
		omp_set_num_threads(run == 0 ? 1 : 2);
#endif
		struct gpt2 *m = gpt2_new(&c, B, T);
		uint64_t rng = 1234;
		gpt2_init_random(m, &rng);
		train_steps(m, inp, tgt, 8, 1e-3f, losses[run]);
		params[run] = malloc(m->nr_params * sizeof(float));
		memcpy(params[run], m->params_memory, m->nr_params * sizeof(float));
		if (run == 1)
			cr_assert(memcmp(params[0], params[1], m->nr_params * sizeof(float)) == 0,
				"weights differ");
		gpt2_free(m);
	}
	cr_assert(memcmp(losses[0], losses[1], sizeof(losses[0])) == 0, "losses differ");
	cr_assert(losses[0][7] < losses[0][0], "the runs did not train");
	free(params[0]);
	free(params[1]);
}

Test(model, different_seeds_give_different_weights)
{
	struct gpt2_config c = tiny(64);
	struct gpt2 *a = gpt2_new(&c, 1, 4), *b = gpt2_new(&c, 1, 4);
	uint64_t r1 = 1, r2 = 2;
	gpt2_init_random(a, &r1);
	gpt2_init_random(b, &r2);
	cr_assert(memcmp(a->params.wte, b->params.wte, 64 * 16 * sizeof(float)) != 0);
	gpt2_free(a);
	gpt2_free(b);
}

Test(model, adamw_decays_only_the_2d_weights)
{
	struct gpt2_config c = tiny(64);
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	uint64_t rng = 9;
	gpt2_init_random(m, &rng);
	for (size_t i = 0; i < m->nr_params; i++) /* biases and norms away from 0 and 1 */
		m->params_memory[i] += 0.5f;
	float *before = malloc(m->nr_params * sizeof(float));
	memcpy(before, m->params_memory, m->nr_params * sizeof(float));
	gpt2_zero_grad(
		m); /* with no gradient, Adam's own step is zero: only decay moves a weight */
	struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
	gpt2_update(m, &opt, 0.01f, 1.0f, 1);
	size_t off = 0;
	const int decayed[GPT2_NR_PARAM_TENSORS] = { 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0,
		0 };
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		for (size_t i = off; i < off + m->param_sizes[k]; i += 7) {
			double want = decayed[k] ? before[i] * (1.0 - 0.01 * 0.1) : before[i];
			cr_assert_float_eq(m->params_memory[i], want, 1e-6, "tensor %d", k);
		}
		off += m->param_sizes[k];
	}
	free(before);
	gpt2_free(m);
}

Test(model, grad_norm_is_the_global_l2_norm)
{
	struct gpt2_config c = tiny(64);
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	uint64_t rng = 3;
	double sum = 0;
	for (size_t i = 0; i < m->nr_params; i++) {
		m->grads_memory[i] = rng_normal(&rng) * 0.01f;
		sum += (double)m->grads_memory[i] * m->grads_memory[i];
	}
	cr_assert_float_eq(gpt2_grad_norm(m), sqrt(sum), 1e-6 * sqrt(sum));
	gpt2_free(m);
}

Test(model, lr_schedule_warms_up_linearly_then_decays_by_cosine)
{
	float lr = 6e-4f;
	int warmup = 10, steps = 110;
	cr_assert_float_eq(lr_schedule(lr, 0, warmup, steps, 0.1f), lr / 10, 1e-9);
	cr_assert_float_eq(lr_schedule(lr, 4, warmup, steps, 0.1f), lr * 5 / 10, 1e-9);
	cr_assert_float_eq(lr_schedule(lr, warmup, warmup, steps, 0.1f), lr, 1e-9);
	cr_assert_float_eq(lr_schedule(lr, steps - 1, warmup, steps, 0.1f), lr * 0.1f, 1e-9);
	/* half way through the decay: the cosine is at zero, lr half way between peak and end */
	int mid = warmup + (steps - 1 - warmup) / 2;
	double ratio = (double)(mid - warmup) / (steps - 1 - warmup);
	double want = lr * 0.1 + 0.5 * (1 + cos(M_PI * ratio)) * (lr - lr * 0.1);
	cr_assert_float_eq(lr_schedule(lr, mid, warmup, steps, 0.1f), want, 1e-8);
	for (int s = warmup; s < steps - 1; s++)
		cr_assert(lr_schedule(lr, s + 1, warmup, steps, 0.1f) <=
			  lr_schedule(lr, s, warmup, steps, 0.1f));
}

Test(model, rejects_shapes_that_do_not_fit)
{
	struct gpt2_config c = tiny(64);
	cr_assert_null(gpt2_new(&c, 1, 17), "T beyond max_seq_len");
	c.channels = 15;
	cr_assert_null(gpt2_new(&c, 1, 4), "C not a multiple of NH");
}

/* ---- tensor parallelism (model.h's gpt2_tp), T ranks as T threads of one process ---- */

#define TP_MAX 4

/* The tensor group's all-reduce between threads: each rank posts its buffer, rank 0 sums them
 * in rank order into a scratch, every rank copies the sum back. */
struct tp_group {
	int T;
	pthread_barrier_t bar;
	float *bufs[TP_MAX];
	float *sum;
	size_t cap;
	int calls;
};

struct tp_rank {
	struct tp_group *g;
	int t;
	struct gpt2 *m;
	const int32_t *inp, *tgt;
	float norm;
};

static void tp_allreduce_threads(void *arg, float *buf, size_t n)
{
	struct tp_rank *r = arg;
	struct tp_group *g = r->g;
	g->bufs[r->t] = buf;
	pthread_barrier_wait(&g->bar);
	if (r->t == 0) {
		if (n > g->cap) {
			g->sum = realloc(g->sum, n * sizeof(float));
			g->cap = n;
		}
		for (size_t i = 0; i < n; i++) {
			float s = 0.0f;
			for (int t = 0; t < g->T; t++)
				s += g->bufs[t][i];
			g->sum[i] = s;
		}
		g->calls++;
	}
	pthread_barrier_wait(&g->bar);
	memcpy(buf, g->sum, n * sizeof(float));
	pthread_barrier_wait(&g->bar);
}

static void *tp_rank_step(void *arg)
{
	struct tp_rank *r = arg;
	gpt2_zero_grad(r->m);
	gpt2_forward(r->m, r->inp, r->tgt);
	gpt2_backward(r->m, r->inp, r->tgt, 1.0f / (r->m->B * r->m->T));
	return NULL;
}

static void *tp_rank_norm(void *arg)
{
	struct tp_rank *r = arg;
	r->norm = gpt2_grad_norm(r->m);
	return NULL;
}

Test(model, tensor_shards_scatter_and_gather_back_to_the_whole_layout)
{
	struct gpt2_config c = tiny(64);
	c.nr_heads = 4;
	struct gpt2 *whole = gpt2_new(&c, 1, 4);
	uint64_t rng = 9;
	for (size_t i = 0; i < whole->nr_params; i++)
		whole->params_memory[i] = rng_normal(&rng);
	float *back = calloc(whole->nr_params, sizeof(float));
	for (int T = 1; T <= 4; T *= 2) {
		memset(back, 0, whole->nr_params * sizeof(float));
		struct tp_group g = { .T = T };
		struct gpt2 *m[TP_MAX];
		struct tp_rank r[TP_MAX];
		for (int t = 0; t < T; t++) {
			r[t] = (struct tp_rank){ &g, t, NULL, NULL, NULL, 0.0f };
			struct gpt2_tp tp = { T, t, tp_allreduce_threads, &r[t] };
			m[t] = gpt2_new_tp(&c, 1, 4, &tp);
			cr_assert_not_null(m[t]);
			cr_assert_eq(T == 1, m[t]->nr_params == whole->nr_params);
			gpt2_tp_scatter(m[t], t, whole->params_memory, m[t]->params_memory);
			gpt2_tp_gather(m[t], t, m[t]->params_memory, back);
		}
		cr_assert(memcmp(back, whole->params_memory, whole->nr_params * sizeof(float)) == 0,
			"T %d: the shards do not make up the whole", T);
		if (T == 2) {
			/* rank 1's first k row is row C + C/2 of layer 0's qkvw; its first column
			 * of attprojw's row 3 is column C/2 of it; fcprojw likewise at 4C/2 */
			size_t C = c.channels, Cl = C / 2;
			cr_assert_eq(m[1]->params.qkvw[Cl * C], whole->params.qkvw[(C + Cl) * C]);
			cr_assert_eq(m[1]->params.attprojw[3 * Cl],
				whole->params.attprojw[3 * C + Cl]);
			cr_assert_eq(m[1]->params.fcprojw[3 * 4 * Cl],
				whole->params.fcprojw[3 * 4 * C + 4 * Cl]);
			cr_assert_eq(m[1]->params.fcb[0], whole->params.fcb[4 * Cl]);
		}
		for (int t = 0; t < T; t++)
			gpt2_free(m[t]);
	}
	free(back);
	gpt2_free(whole);
}

Test(model, tensor_parallel_loss_gradients_and_norm_equal_the_whole_models)
{
	int B = 2, Tq = 8, V = 64;
	struct gpt2_config c = tiny(V);
	c.nr_heads = 4;
	struct gpt2 *whole = gpt2_new(&c, B, Tq);
	uint64_t rng = 11;
	gpt2_init_random(whole, &rng);
	/* nonzero biases, so that a bias added twice (or never) shows */
	for (size_t i = 0; i < whole->nr_params; i++)
		whole->params_memory[i] += 0.05f * rng_normal(&rng);
	int32_t inp[16], tgt[16];
	fixed_batch(inp, tgt, B * Tq, V, 5);
	gpt2_zero_grad(whole);
	gpt2_forward(whole, inp, tgt);
	gpt2_backward(whole, inp, tgt, 1.0f / (B * Tq));
	float norm = gpt2_grad_norm(whole);
	float *grads = calloc(whole->nr_params, sizeof(float));
	for (int T = 2; T <= 4; T *= 2) {
		struct tp_group g = { .T = T };
		pthread_barrier_init(&g.bar, NULL, (unsigned)T);
		struct tp_rank r[TP_MAX];
		pthread_t th[TP_MAX];
		for (int t = 0; t < T; t++) {
			r[t] = (struct tp_rank){ &g, t, NULL, inp, tgt, 0.0f };
			struct gpt2_tp tp = { T, t, tp_allreduce_threads, &r[t] };
			r[t].m = gpt2_new_tp(&c, B, Tq, &tp);
			cr_assert_not_null(r[t].m);
			gpt2_tp_scatter(r[t].m, t, whole->params_memory, r[t].m->params_memory);
		}
		for (int t = 0; t < T; t++)
			pthread_create(&th[t], NULL, tp_rank_step, &r[t]);
		for (int t = 0; t < T; t++)
			pthread_join(th[t], NULL);
		/* 2 all-reduces forward and 2 backward per layer */
		cr_assert_eq(g.calls, 4 * c.nr_layers, "T %d: %d all-reduces", T, g.calls);
		memset(grads, 0, whole->nr_params * sizeof(float));
		for (int t = 0; t < T; t++) {
			cr_assert_float_eq(r[t].m->mean_loss, whole->mean_loss,
				1e-6 * whole->mean_loss, "T %d rank %d: loss %.9g, whole %.9g", T,
				t, r[t].m->mean_loss, whole->mean_loss);
			gpt2_tp_gather(r[t].m, t, r[t].m->grads_memory, grads);
		}
		float maxg = 0.0f, maxd = 0.0f;
		for (size_t i = 0; i < whole->nr_params; i++) {
			maxg = fmaxf(maxg, fabsf(whole->grads_memory[i]));
			maxd = fmaxf(maxd, fabsf(grads[i] - whole->grads_memory[i]));
		}
		cr_assert(maxd <= 1e-5f * maxg, "T %d: gradients differ by %g (largest %g)", T,
			maxd, maxg);
		/* the norm: every rank calls it (one all-reduce) */
		float norms[TP_MAX];
		for (int t = 0; t < T; t++)
			pthread_create(&th[t], NULL, tp_rank_norm, &r[t]);
		for (int t = 0; t < T; t++) {
			pthread_join(th[t], NULL);
			norms[t] = r[t].norm;
			cr_assert_float_eq(norms[t], norm, 1e-5 * norm,
				"T %d rank %d: norm %g, whole %g", T, t, norms[t], norm);
			gpt2_free(r[t].m);
		}
		pthread_barrier_destroy(&g.bar);
		free(g.sum);
	}
	free(grads);
	gpt2_free(whole);
}
