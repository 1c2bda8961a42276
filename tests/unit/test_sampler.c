/* The sample order (loader/sampler.c): a two-level shuffle (blocks of consecutive samples
 * permuted, samples permuted within a window of blocks), the same for every layout (ranks take
 * slices of each global batch), a pure function of its inputs. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader_i.h"

static uint8_t *seen_new(uint64_t n)
{
	uint8_t *s = calloc(n ? n : 1, 1);

	cr_assert_not_null(s);
	return s;
}

/* Orders to try: dataset sizes, batch, world, block samples, window blocks. Some have whole
 * windows and a tail, some only a tail (n below one window), some no tail. */
struct cfg {
	uint64_t n;
	uint32_t B, W;
	uint64_t S;
	uint32_t G;
};
static const struct cfg cfgs[] = {
	{ 1001, 4, 3, 8, 3 },  /* 41 whole windows of 8 x 3, a tail */
	{ 1000, 5, 1, 20, 2 }, /* 25 whole windows, no tail */
	{ 1000, 4, 2, 7, 4 },  /* windows of 28: batches straddle them */
	{ 97, 3, 2, 1000, 8 }, /* tail only */
	{ 5000, 8, 4, 16, 1 }, /* one block per window */
	{ 4099, 1, 1, 64, 5 },
};
#define NR_CFGS (sizeof(cfgs) / sizeof(cfgs[0]))

static void init(struct sampler *s, const struct cfg *c, uint32_t rank, uint64_t seed)
{
	sampler_init(s, c->n, c->B, c->W, rank, seed, true, c->S, c->G, 0);
}

Test(sampler, feistel_is_a_bijection_for_many_sizes)
{
	static const uint64_t sizes[] = { 1, 2, 3, 4, 5, 7, 16, 17, 100, 255, 256, 257, 1000, 4097,
		65536, 100003 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t n = sizes[i];
		uint8_t *seen = seen_new(n);

		for (uint64_t k = 0; k < n; k++) {
			uint64_t v = sampler_feistel(0x1234 + i, n, k);

			cr_assert_lt(v, n);
			cr_assert_eq(seen[v], 0, "n=%llu: %llu hit twice", (unsigned long long)n,
				(unsigned long long)v);
			seen[v] = 1;
		}
		free(seen);
	}
}

Test(sampler, every_rank_gets_the_same_number_of_steps_and_the_remainder_is_dropped)
{
	for (size_t c = 0; c < NR_CFGS; c++)
		for (uint32_t r = 0; r < cfgs[c].W; r++) {
			struct sampler s;

			init(&s, &cfgs[c], r, 7);
			cr_assert_eq(s.steps_per_epoch, cfgs[c].n / (cfgs[c].B * cfgs[c].W));
			/* The whole windows and the tail hold every sample: the order is global. */
			cr_assert_eq(s.nr_windows * s.window_samples + s.tail_samples, cfgs[c].n);
			cr_assert_eq(s.block_samples, cfgs[c].S);
		}
}

Test(sampler, each_sample_is_used_once_across_ranks_per_epoch)
{
	for (size_t c = 0; c < NR_CFGS; c++) {
		const struct cfg *cf = &cfgs[c];

		for (uint64_t epoch = 0; epoch < 3; epoch++) {
			uint8_t *seen = seen_new(cf->n);
			uint64_t used = 0;

			for (uint32_t r = 0; r < cf->W; r++) {
				struct sampler s;

				init(&s, cf, r, 7);
				for (uint64_t p = 0; p < s.steps_per_epoch; p++)
					for (uint32_t j = 0; j < cf->B; j++) {
						uint64_t g = sampler_sample(&s, epoch, p, j);

						cr_assert_lt(g, cf->n);
						cr_assert_eq(seen[g], 0,
							"cfg %zu epoch %llu: %llu twice", c,
							(unsigned long long)epoch,
							(unsigned long long)g);
						seen[g] = 1;
						used++;
					}
			}
			cr_assert_eq(used, (cf->n / (cf->B * cf->W)) * cf->B * cf->W);
			free(seen);
		}
	}
}

Test(sampler, covers_every_sample_when_the_batch_divides_the_dataset)
{
	const uint64_t n = 240;
	uint8_t *seen = seen_new(n);

	for (uint32_t r = 0; r < 2; r++) {
		struct sampler s;

		sampler_init(&s, n, 8, 2, r, 1, true, 16, 3, 0); /* 5 whole windows of 48 */
		cr_assert_eq(s.nr_windows, 5);
		for (uint64_t p = 0; p < s.steps_per_epoch; p++)
			for (uint32_t j = 0; j < 8; j++)
				seen[sampler_sample(&s, 5, p, j)]++;
	}
	for (uint64_t g = 0; g < n; g++)
		cr_assert_eq(seen[g], 1, "sample %llu", (unsigned long long)g);
	free(seen);
}

/* The contract the reader relies on: the k-th sample of the order is in its window's runs, at
 * the slot the sampler names, a window's runs are few and long, and a batch the sampler places
 * in one window lies there whole. */
Test(sampler, every_sample_lies_in_its_window_runs_at_its_slot)
{
	for (size_t c = 0; c < NR_CFGS; c++) {
		const struct cfg *cf = &cfgs[c];
		struct sampler s;
		struct sampler_run runs[16];

		init(&s, cf, 0, 11);
		for (uint64_t epoch = 0; epoch < 2; epoch++)
			for (uint64_t k = 0; k < s.used_samples; k++) {
				uint64_t w = sampler_window(&s, k), size = 0;
				uint32_t nr = sampler_window_runs(&s, epoch, w, runs);
				uint64_t t = sampler_window_slot(&s, epoch, k);
				uint32_t i = 0;

				cr_assert_leq(nr, SAMPLER_MAX_RUNS(&s));
				for (uint32_t q = 0; q < nr; q++) {
					cr_assert_eq(runs[q].slot, size, "runs in slot order");
					cr_assert_leq(runs[q].first + runs[q].nr, cf->n);
					size += runs[q].nr;
				}
				cr_assert_eq(size, sampler_window_size(&s, w));
				cr_assert_lt(t, size);
				while (i + 1 < nr && runs[i + 1].slot <= t)
					i++;
				cr_assert_eq(runs[i].first + (t - runs[i].slot),
					sampler_order(&s, epoch, k));
			}
		for (uint32_t r = 0; r < cf->W; r++) {
			init(&s, cf, r, 11);
			for (uint64_t p = 0; p < s.steps_per_epoch; p++) {
				uint64_t w = sampler_batch_window(&s, p);
				uint64_t w0 = sampler_window(&s, sampler_index(&s, p, 0));
				uint64_t w1 = sampler_window(&s, sampler_index(&s, p, cf->B - 1));

				cr_assert_eq(w, w0 == w1 ? w0 : SAMPLER_NO_WINDOW);
			}
		}
	}
}

/* The point of the global order: W ranks of B accumulating A micro-batches a step read, step
 * by step, the samples 1 rank of W*B*A reads, in the same order, across epochs too. */
Test(sampler, every_layout_of_one_global_batch_reads_the_same_samples)
{
	static const struct {
		uint32_t B, W;
	} layouts[] = { { 12, 1 }, { 6, 2 }, { 4, 3 }, { 3, 1 }, { 2, 2 }, { 1, 4 }, { 3, 4 } };
	const uint64_t n = 1001, G = 12;
	struct sampler ref, s;

	sampler_init(&ref, n, 12, 1, 0, 3, true, 7, 4, G);
	cr_assert_eq(ref.used_samples, 996);
	for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
		const uint32_t B = layouts[i].B, W = layouts[i].W;

		for (uint32_t r = 0; r < W; r++) {
			sampler_init(&s, n, B, W, r, 3, true, 7, 4, G);
			cr_assert_eq(s.used_samples, ref.used_samples);
			cr_assert_eq(s.steps_per_epoch * B * W, ref.used_samples);
			for (uint64_t e = 0; e < 2; e++)
				for (uint64_t p = 0; p < s.steps_per_epoch; p++)
					for (uint32_t j = 0; j < B; j++) {
						/* global micro-batch p: samples p*W*B .. of the step's */
						uint64_t k = (p * W + r) * B + j;

						cr_assert_eq(sampler_sample(&s, e, p, j),
							sampler_sample(&ref, e, k / G, k % G),
							"B %u W %u rank %u epoch %llu position %llu",
							B, W, r, (unsigned long long)e,
							(unsigned long long)p);
					}
		}
	}
}

Test(sampler, a_whole_window_is_read_as_its_blocks)
{
	struct sampler s;
	struct sampler_run runs[8];

	/* 2 MiB blocks of 1024-token uint16 samples, 4 blocks a window, as the loader would. */
	sampler_init(&s, 200000, 64, 1, 0, 3, true, 1024, 4, 0);
	cr_assert_eq(s.window_samples, 4096);
	for (uint64_t w = 0; w < s.nr_windows; w++) {
		uint32_t nr = sampler_window_runs(&s, 0, w, runs);
		uint64_t longest = 0;

		cr_assert_leq(nr, 5);
		for (uint32_t i = 0; i < nr; i++)
			longest = runs[i].nr > longest ? runs[i].nr : longest;
		cr_assert_geq(longest, 512, "window %llu", (unsigned long long)w);
	}
}

Test(sampler, is_deterministic_for_the_same_inputs)
{
	struct sampler a, b;

	sampler_init(&a, 5000, 8, 2, 1, 1234, true, 32, 4, 0);
	sampler_init(&b, 5000, 8, 2, 1, 1234, true, 32, 4, 0);
	for (uint64_t p = 0; p < a.steps_per_epoch; p++)
		for (uint32_t j = 0; j < 8; j++)
			cr_assert_eq(sampler_sample(&a, 2, p, j), sampler_sample(&b, 2, p, j));
}

/* A fresh sampler at any (epoch, position) gives what a walk from the start gives there: at
 * window starts, in the middle of windows, in the tail and across the epoch boundary. */
Test(sampler, resumes_exactly_at_every_position_including_mid_window)
{
	const struct cfg *cf = &cfgs[0];
	struct sampler walk;
	struct loader_state st = { 0, 0 };
	uint64_t n, *order;
	uint64_t mid_window = 0;

	init(&walk, cf, 1, 42);
	n = 2 * walk.steps_per_epoch + 3;
	order = malloc(n * cf->B * sizeof(*order));
	for (uint64_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < cf->B; j++)
			order[i * cf->B + j] = sampler_sample(&walk, st.epoch, st.position, j);
		sampler_advance(&walk, &st);
	}
	for (uint64_t i = 0; i < n; i++) {
		struct sampler fresh;
		struct loader_state at = { i / walk.steps_per_epoch, i % walk.steps_per_epoch };

		init(&fresh, cf, 1, 42);
		mid_window += sampler_index(&fresh, at.position, 0) % fresh.window_samples != 0;
		for (uint64_t k = i; k < n && k < i + 3; k++) {
			for (uint32_t j = 0; j < cf->B; j++)
				cr_assert_eq(sampler_sample(&fresh, at.epoch, at.position, j),
					order[k * cf->B + j], "resume at step %llu",
					(unsigned long long)i);
			sampler_advance(&fresh, &at);
		}
	}
	cr_assert_gt(mid_window, 0);
	free(order);
}

Test(sampler, order_differs_between_epochs_and_between_seeds)
{
	struct sampler s, t;
	uint64_t same_epoch = 0, same_seed = 0;

	sampler_init(&s, 10000, 1, 1, 0, 99, true, 64, 8, 0);
	sampler_init(&t, 10000, 1, 1, 0, 100, true, 64, 8, 0);
	for (uint64_t k = 0; k < s.steps_per_epoch; k++) {
		same_epoch += sampler_sample(&s, 0, k, 0) == sampler_sample(&s, 1, k, 0);
		same_seed += sampler_sample(&s, 0, k, 0) == sampler_sample(&t, 0, k, 0);
	}
	/* A random permutation has about one fixed point relative to another. */
	cr_assert_lt(same_epoch, 50);
	cr_assert_lt(same_seed, 50);
}

/* The rotation moves block boundaries each epoch: samples that shared a block in one epoch
 * mostly do not in the next. */
Test(sampler, blocks_group_other_samples_each_epoch)
{
	struct sampler s;
	struct sampler_run runs[8];
	uint64_t first[2];

	sampler_init(&s, 100003, 4, 1, 0, 8, true, 100, 2, 0);
	for (uint64_t e = 0; e < 2; e++) {
		sampler_window_runs(&s, e, 0, runs);
		first[e] = runs[0].first;
	}
	cr_assert_neq(first[0] % s.block_samples, first[1] % s.block_samples);
}

Test(sampler, shuffled_order_is_not_file_order)
{
	struct sampler s;
	uint64_t in_place = 0, adjacent = 0, prev = 0;

	sampler_init(&s, 10000, 1, 1, 0, 5, true, 64, 8, 0);
	for (uint64_t k = 0; k < s.steps_per_epoch; k++) {
		uint64_t g = sampler_sample(&s, 0, k, 0);

		in_place += g == k;
		/* Within a window, neighbours in the order are not neighbours in the files. */
		adjacent += k && (g == prev + 1 || g + 1 == prev);
		prev = g;
	}
	cr_assert_lt(in_place, 50);
	cr_assert_lt(adjacent, 100);
}

Test(sampler, without_shuffle_samples_come_in_file_order_interleaved_by_rank)
{
	struct sampler s;

	sampler_init(&s, 100, 4, 2, 1, 5, false, 8, 2, 0);
	cr_assert_eq(s.steps_per_epoch, 12);
	for (uint64_t p = 0; p < 12; p++)
		for (uint32_t j = 0; j < 4; j++)
			cr_assert_eq(sampler_sample(&s, 3, p, j), (p * 2 + 1) * 4 + j);
}

Test(sampler, advance_crosses_into_the_next_epoch_after_the_last_step)
{
	struct sampler s;
	struct loader_state st = { 0, 0 };

	sampler_init(&s, 100, 10, 1, 0, 0, true, 20, 2, 0);
	for (int i = 0; i < 10; i++)
		sampler_advance(&s, &st);
	cr_assert_eq(st.epoch, 1);
	cr_assert_eq(st.position, 0);
}

Test(sampler, handles_datasets_beyond_four_billion_samples)
{
	struct sampler s;
	const uint64_t n = (1ull << 33) + 12345;
	struct sampler_run runs[8];

	sampler_init(&s, n, 8, 2, 1, 77, true, 1024, 4, 0);
	for (uint64_t p = s.steps_per_epoch - 100; p < s.steps_per_epoch; p++)
		cr_assert_lt(sampler_sample(&s, 0, p, 7), n);
	cr_assert_neq(sampler_sample(&s, 0, 0, 0), sampler_sample(&s, 0, 0, 1));
	cr_assert_leq(sampler_window_runs(&s, 1, s.nr_windows / 2, runs), 5);
}
