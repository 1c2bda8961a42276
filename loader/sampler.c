/* The sample order: a pure function of (seed, epoch, world size, rank, position), so a saved
 * (epoch, position) resumes exactly. Sits between the dataset (which sample is where) and the
 * reader (which bytes to fetch next). */
#include "config.h"

#include <string.h>

#include "loader/loader_i.h"

/* splitmix64's finaliser: a strong 64-bit mixer, enough for a Feistel round function. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

void sampler_init(struct sampler *s, uint64_t nr_samples, uint32_t batch, uint32_t world,
	uint32_t rank, uint64_t seed, bool shuffle)
{
	uint32_t bits = 0;

	memset(s, 0, sizeof(*s));
	s->nr_samples = nr_samples;
	s->batch = batch ? batch : 1;
	s->world = world ? world : 1;
	s->rank = rank;
	s->seed = seed;
	s->shuffle = shuffle;
	s->steps_per_epoch = nr_samples / ((uint64_t)s->batch * s->world);
	/* Smallest even-width power of two >= nr_samples (at least 2^2): cycle-walking then
	 * takes fewer than 4 rounds on average. */
	while (bits < 32 && (1ull << (2 * bits)) < nr_samples)
		bits++;
	s->half_bits = bits ? bits : 1;
}

/* A 4-round balanced Feistel network on 2 * half_bits bits, keyed by (seed, epoch): a bijection
 * of [0, 2^(2h)); walking the cycle until the value falls below nr_samples restricts it to a
 * bijection of [0, nr_samples) without any table. Fisher-Yates would need 8 bytes per sample
 * in memory and O(n) work per epoch; this is O(1) per lookup and stateless. */
uint64_t sampler_permute(const struct sampler *s, uint64_t epoch, uint64_t k)
{
	const uint32_t h = s->half_bits;
	const uint64_t mask = (h >= 32) ? 0xffffffffull : ((1ull << h) - 1);
	const uint64_t key = mix64(s->seed ^ mix64(epoch + 0x9e3779b97f4a7c15ull));
	uint64_t x = k;

	if (!s->shuffle)
		return k;
	do {
		uint64_t l = (x >> h) & mask, r = x & mask;

		for (uint64_t round = 0; round < 4; round++) {
			uint64_t f = mix64(key ^ (round << 56) ^ r) & mask;
			uint64_t t = l ^ f;

			l = r;
			r = t;
		}
		x = (l << h) | r;
	} while (x >= s->nr_samples);
	return x;
}

uint64_t sampler_sample(const struct sampler *s, uint64_t epoch, uint64_t position, uint32_t j)
{
	uint64_t k = (position * s->world + s->rank) * s->batch + j;

	return sampler_permute(s, epoch, k);
}

void sampler_advance(const struct sampler *s, struct loader_state *st)
{
	if (++st->position >= s->steps_per_epoch) {
		st->position = 0;
		st->epoch++;
	}
}
