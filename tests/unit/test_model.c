/* Unit tests of train/model.c: the whole model's gradient against finite differences, a tiny
 * model memorising a fixed batch, bit-for-bit determinism, AdamW's decay rule, the gradient
 * norm and the learning-rate schedule. No loader: batches are made here. */
#include <criterion/criterion.h>
#include <math.h>
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
