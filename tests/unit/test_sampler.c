/* The sample order (loader/sampler.c): a keyed permutation per epoch, split evenly over ranks,
 * a pure function of its inputs. */
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

Test(sampler, permutation_is_a_bijection_for_many_sizes)
{
	static const uint64_t sizes[] = { 1, 2, 3, 4, 5, 7, 16, 17, 100, 255, 256, 257, 1000,
		4097, 65536, 100003 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct sampler s;
		uint64_t n = sizes[i];
		uint8_t *seen = seen_new(n);

		sampler_init(&s, n, 1, 1, 0, 42 + i, true);
		for (uint64_t k = 0; k < n; k++) {
			uint64_t v = sampler_permute(&s, 3, k);

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
	const uint64_t n = 1001;
	const uint32_t B = 4, W = 3;

	for (uint32_t r = 0; r < W; r++) {
		struct sampler s;

		sampler_init(&s, n, B, W, r, 7, true);
		cr_assert_eq(s.steps_per_epoch, n / (B * W)); /* 83 */
	}
}

Test(sampler, each_sample_is_used_once_across_ranks_per_epoch)
{
	const uint64_t n = 1001;
	const uint32_t B = 4, W = 3;

	for (uint64_t epoch = 0; epoch < 3; epoch++) {
		uint8_t *seen = seen_new(n);
		uint64_t used = 0;

		for (uint32_t r = 0; r < W; r++) {
			struct sampler s;

			sampler_init(&s, n, B, W, r, 7, true);
			for (uint64_t p = 0; p < s.steps_per_epoch; p++)
				for (uint32_t j = 0; j < B; j++) {
					uint64_t g = sampler_sample(&s, epoch, p, j);

					cr_assert_lt(g, n);
					cr_assert_eq(seen[g], 0);
					seen[g] = 1;
					used++;
				}
		}
		cr_assert_eq(used, (n / (B * W)) * B * W);
		free(seen);
	}
}

Test(sampler, covers_every_sample_when_the_batch_divides_the_dataset)
{
	const uint64_t n = 240;
	uint8_t *seen = seen_new(n);

	for (uint32_t r = 0; r < 2; r++) {
		struct sampler s;

		sampler_init(&s, n, 8, 2, r, 1, true);
		for (uint64_t p = 0; p < s.steps_per_epoch; p++)
			for (uint32_t j = 0; j < 8; j++)
				seen[sampler_sample(&s, 5, p, j)]++;
	}
	for (uint64_t g = 0; g < n; g++)
		cr_assert_eq(seen[g], 1, "sample %llu", (unsigned long long)g);
	free(seen);
}

Test(sampler, is_deterministic_for_the_same_inputs)
{
	struct sampler a, b;

	sampler_init(&a, 5000, 8, 2, 1, 1234, true);
	sampler_init(&b, 5000, 8, 2, 1, 1234, true);
	for (uint64_t p = 0; p < a.steps_per_epoch; p++)
		for (uint32_t j = 0; j < 8; j++)
			cr_assert_eq(sampler_sample(&a, 2, p, j), sampler_sample(&b, 2, p, j));
}

Test(sampler, order_differs_between_epochs_and_between_seeds)
{
	struct sampler s, t;
	uint64_t same_epoch = 0, same_seed = 0;

	sampler_init(&s, 10000, 1, 1, 0, 99, true);
	sampler_init(&t, 10000, 1, 1, 0, 100, true);
	for (uint64_t k = 0; k < 10000; k++) {
		same_epoch += sampler_permute(&s, 0, k) == sampler_permute(&s, 1, k);
		same_seed += sampler_permute(&s, 0, k) == sampler_permute(&t, 0, k);
	}
	/* A random permutation has about one fixed point relative to another. */
	cr_assert_lt(same_epoch, 50);
	cr_assert_lt(same_seed, 50);
}

Test(sampler, shuffled_order_is_not_file_order)
{
	struct sampler s;
	uint64_t in_place = 0;

	sampler_init(&s, 10000, 1, 1, 0, 5, true);
	for (uint64_t k = 0; k < 10000; k++)
		in_place += sampler_permute(&s, 0, k) == k;
	cr_assert_lt(in_place, 50);
}

Test(sampler, without_shuffle_samples_come_in_file_order_interleaved_by_rank)
{
	struct sampler s;

	sampler_init(&s, 100, 4, 2, 1, 5, false);
	cr_assert_eq(s.steps_per_epoch, 12);
	for (uint64_t p = 0; p < 12; p++)
		for (uint32_t j = 0; j < 4; j++)
			cr_assert_eq(sampler_sample(&s, 3, p, j), (p * 2 + 1) * 4 + j);
}

Test(sampler, advance_crosses_into_the_next_epoch_after_the_last_step)
{
	struct sampler s;
	struct loader_state st = { 0, 0 };

	sampler_init(&s, 100, 10, 1, 0, 0, true);
	for (int i = 0; i < 10; i++)
		sampler_advance(&s, &st);
	cr_assert_eq(st.epoch, 1);
	cr_assert_eq(st.position, 0);
}

Test(sampler, handles_datasets_beyond_four_billion_samples)
{
	struct sampler s;
	const uint64_t n = (1ull << 33) + 12345;

	sampler_init(&s, n, 1, 1, 0, 77, true);
	for (uint64_t k = n - 1000; k < n; k++)
		cr_assert_lt(sampler_permute(&s, 0, k), n);
	cr_assert_neq(sampler_permute(&s, 0, 0), sampler_permute(&s, 0, 1));
}
