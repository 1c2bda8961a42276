/* The sample order: a pure function of (seed, epoch, global position), the same for any world
 * size, so that a saved (epoch, position) resumes exactly, on any number of ranks. Sits between
 * the dataset (which sample is where) and the reader (which bytes to fetch next): the shuffled
 * order is built so that it can be read in large reads, a window of whole blocks at a time. */
#include "config.h"

#include <string.h>

#include "loader/loader_i.h"

#define GOLDEN   0x9e3779b97f4a7c15ull
#define SALT_ROT 0x726f746174696f6eull /* "rotation" */
#define SALT_BLK 0x626c6f636b730000ull /* "blocks" */

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

/* A 4-round balanced Feistel network on 2h bits (4^h >= n, h >= 1), keyed: a bijection of
 * [0, 4^h); walking the cycle until the value falls below n restricts it to a bijection of
 * [0, n) without any table. Fisher-Yates would need 8 bytes per element and O(n) work per
 * epoch; this is O(1) per lookup (under 4 walks on average) and stateless. */
uint64_t sampler_feistel(uint64_t key, uint64_t n, uint64_t x)
{
	uint32_t h = 1;
	uint64_t mask;

	while (h < 32 && (1ull << (2 * h)) < n)
		h++;
	mask = (h >= 32) ? 0xffffffffull : ((1ull << h) - 1);
	do {
		uint64_t l = (x >> h) & mask, r = x & mask;

		for (uint64_t round = 0; round < 4; round++) {
			uint64_t f = mix64(key ^ (round << 56) ^ r) & mask;
			uint64_t t = l ^ f;

			l = r;
			r = t;
		}
		x = (l << h) | r;
	} while (x >= n);
	return x;
}

void sampler_init(struct sampler *s, uint64_t nr_samples, uint32_t batch, uint32_t world,
	uint32_t rank, uint64_t seed, bool shuffle, uint64_t block_samples, uint32_t window_blocks,
	uint64_t global_batch)
{
	uint64_t micro;

	memset(s, 0, sizeof(*s));
	s->nr_samples = nr_samples;
	s->batch = batch ? batch : 1;
	s->world = world ? world : 1;
	s->rank = rank;
	s->seed = seed;
	s->shuffle = shuffle;
	micro = (uint64_t)s->batch * s->world;
	/* A multiple of the global micro-batch (loader_open refuses any other). */
	s->global_batch = global_batch && global_batch % micro == 0 ? global_batch : micro;
	s->used_samples = nr_samples / s->global_batch * s->global_batch;
	s->steps_per_epoch = s->used_samples / micro;
	/* Nothing here depends on the batch or the world size: the order is the same for all. */
	s->block_samples = block_samples ? block_samples : 1;
	s->window_blocks = window_blocks ? window_blocks : 1;
	s->window_samples = s->block_samples * s->window_blocks;
	s->nr_windows = nr_samples / s->window_samples;
	s->nr_blocks = s->nr_windows * s->window_blocks;
	s->tail_samples = nr_samples - s->nr_windows * s->window_samples;
}

static uint64_t epoch_key(const struct sampler *s, uint64_t epoch)
{
	return mix64(s->seed ^ mix64(epoch + GOLDEN));
}

static uint64_t window_key(uint64_t key, uint64_t window)
{
	return mix64(key ^ mix64(window + GOLDEN));
}

/* Where the virtual sample space starts in the files this epoch: moving it moves the block
 * boundaries, so that the samples that share a block (and so a window) change every epoch. */
static uint64_t rotation(const struct sampler *s, uint64_t key)
{
	return mix64(key ^ SALT_ROT) % s->nr_samples;
}

uint64_t sampler_index(const struct sampler *s, uint64_t position, uint32_t j)
{
	return (position * s->world + s->rank) * s->batch + j;
}

uint64_t sampler_window(const struct sampler *s, uint64_t k)
{
	uint64_t w = k / s->window_samples;

	return w < s->nr_windows ? w : s->nr_windows;
}

uint64_t sampler_window_size(const struct sampler *s, uint64_t window)
{
	return window < s->nr_windows ? s->window_samples : s->tail_samples;
}

uint64_t sampler_nr_windows_used(const struct sampler *s)
{
	return s->used_samples ? sampler_window(s, s->used_samples - 1) + 1 : 0;
}

uint64_t sampler_batch_window(const struct sampler *s, uint64_t position)
{
	uint64_t first = sampler_index(s, position, 0), w = sampler_window(s, first);

	return sampler_window(s, first + s->batch - 1) == w ? w : SAMPLER_NO_WINDOW;
}

/* The first virtual sample of the q-th run of a window (before rotation). */
static uint64_t run_virtual(const struct sampler *s, uint64_t key, uint64_t window, uint32_t q)
{
	uint64_t slot;

	if (window >= s->nr_windows)
		return s->nr_windows * s->window_samples;
	slot = window * s->window_blocks + q;
	return sampler_feistel(mix64(key ^ SALT_BLK), s->nr_blocks, slot) * s->block_samples;
}

uint32_t sampler_window_runs(const struct sampler *s, uint64_t epoch, uint64_t window,
	struct sampler_run *runs)
{
	const uint64_t key = epoch_key(s, epoch), rot = rotation(s, key);
	uint32_t nr_virtual = window < s->nr_windows ? s->window_blocks : 1;
	uint64_t len = window < s->nr_windows ? s->block_samples : s->tail_samples;
	uint32_t n = 0;

	if (!len)
		return 0;
	for (uint32_t q = 0; q < nr_virtual; q++) {
		uint64_t g = (run_virtual(s, key, window, q) + rot) % s->nr_samples;
		uint64_t slot = (uint64_t)q * s->block_samples;

		/* At most one run crosses the end of the files back to sample 0. */
		if (g + len > s->nr_samples) {
			runs[n++] = (struct sampler_run){ g, s->nr_samples - g, slot };
			runs[n++] = (struct sampler_run){ 0, g + len - s->nr_samples,
				slot + s->nr_samples - g };
		} else {
			runs[n++] = (struct sampler_run){ g, len, slot };
		}
	}
	return n;
}

uint64_t sampler_window_slot(const struct sampler *s, uint64_t epoch, uint64_t k)
{
	uint64_t w = sampler_window(s, k);

	return sampler_feistel(window_key(epoch_key(s, epoch), w), sampler_window_size(s, w),
		k - w * s->window_samples);
}

uint64_t sampler_order(const struct sampler *s, uint64_t epoch, uint64_t k)
{
	uint64_t key, w, t, v;

	if (!s->shuffle)
		return k;
	key = epoch_key(s, epoch);
	w = sampler_window(s, k);
	t = sampler_window_slot(s, epoch, k);
	if (w < s->nr_windows)
		v = run_virtual(s, key, w, (uint32_t)(t / s->block_samples)) + t % s->block_samples;
	else
		v = run_virtual(s, key, w, 0) + t;
	return (v + rotation(s, key)) % s->nr_samples;
}

uint64_t sampler_sample(const struct sampler *s, uint64_t epoch, uint64_t position, uint32_t j)
{
	return sampler_order(s, epoch, sampler_index(s, position, j));
}

void sampler_advance(const struct sampler *s, struct loader_state *st)
{
	if (++st->position >= s->steps_per_epoch) {
		st->position = 0;
		st->epoch++;
	}
}
