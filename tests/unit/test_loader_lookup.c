/* The loader's look-ups for the trainer's checks (loader/loader.c): the vocabulary the header
 * declares, the shards' files, and where each token of a batch comes from, on real files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader.h"

static char dir[64];
static const uint32_t counts[] = { 3001, 129, 5000, 64, 2222 }; /* tokens per shard */
#define NR_SHARDS 5

/* Token i of shard s names itself: its source can be checked from its value alone. */
static uint32_t token_at(int s, uint32_t i)
{
	return (uint32_t)s * 100000u + i;
}

static void write_shards(int32_t vocab)
{
	for (int s = 0; s < NR_SHARDS; s++) {
		int32_t hdr[256] = { 20240801, 7, (int32_t)counts[s], vocab };
		char path[128];
		snprintf(path, sizeof(path), "%s/shard_%02d.bin", dir, s);
		FILE *f = fopen(path, "wb");
		cr_assert_not_null(f);
		fwrite(hdr, sizeof(hdr), 1, f);
		for (uint32_t i = 0; i < counts[s]; i++) {
			uint32_t t = token_at(s, i);
			fwrite(&t, 4, 1, f);
		}
		fclose(f);
	}
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry_test_lookup_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static struct loader *open_loader(bool shuffle, uint32_t rank, uint32_t world)
{
	static char glob[96];
	struct loader_config cfg = { .batch = 4,
		.seq_len = 16,
		.seed = 3,
		.shuffle = shuffle,
		.rank = rank,
		.world_size = world,
		.device = -1,
		.block_bytes = 4096,
		.window_blocks = 2 };
	struct loader *l;
	char err[256];
	snprintf(glob, sizeof(glob), "%s/*.bin", dir);
	cfg.paths = glob;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	return l;
}

/* Token (j, t) of the batch's inputs (a = 0) or targets (a = 1) is the one its source names. */
static void check_token(struct loader *l, const struct loader_batch *b, uint32_t j, uint32_t t,
	uint32_t a)
{
	int32_t token = (a ? b->targets : b->inputs)[j * 16 + t];
	const char *path;
	uint64_t index;
	int s;
	loader_token_source(l, &b->state, j, t + a, &path, &index);
	cr_assert_eq(sscanf(strrchr(path, '/'), "/shard_%02d.bin", &s), 1);
	cr_assert_eq((uint32_t)token, token_at(s, (uint32_t)index),
		"row %u col %u %s: %d is not token %llu of %s", j, t, a ? "target" : "input", token,
		(unsigned long long)index, path);
}

/* Every token of nr_batches batches is the one its source names. */
static void check_sources(struct loader *l, int nr_batches)
{
	for (int n = 0; n < nr_batches; n++) {
		struct loader_batch b;
		cr_assert_eq(loader_next_batch(l, &b), 0);
		for (uint32_t j = 0; j < 4; j++)
			for (uint32_t t = 0; t < 16; t++) {
				check_token(l, &b, j, t, 0);
				check_token(l, &b, j, t, 1);
			}
	}
}

Test(loader_lookup, every_shuffled_token_comes_from_where_its_source_says, .init = setup,
	.fini = teardown)
{
	write_shards(0);
	for (uint32_t rank = 0; rank < 2; rank++) {
		struct loader *l = open_loader(true, rank, 2);
		/* past an epoch: the order is drawn again */
		check_sources(l, (int)loader_steps_per_epoch(l) + 5);
		loader_free(l);
	}
}

Test(loader_lookup, every_token_in_file_order_comes_from_where_its_source_says, .init = setup,
	.fini = teardown)
{
	write_shards(0);
	struct loader *l = open_loader(false, 1, 2);
	check_sources(l, (int)loader_steps_per_epoch(l));
	loader_free(l);
}

Test(loader_lookup, the_declared_vocabulary_is_zero_when_the_header_has_none, .init = setup,
	.fini = teardown)
{
	write_shards(0);
	struct loader *l = open_loader(true, 0, 1);
	cr_assert_eq(loader_declared_vocab(l), 0);
	cr_assert_eq(loader_vocab_size(l), 50257, "the guess for llm.c shards stays");
	loader_free(l);
	write_shards(600000);
	l = open_loader(true, 0, 1);
	cr_assert_eq(loader_declared_vocab(l), 600000);
	cr_assert_eq(loader_vocab_size(l), 600000);
	loader_free(l);
}

Test(loader_lookup, the_shards_files_come_in_order_and_end, .init = setup, .fini = teardown)
{
	write_shards(0);
	struct loader *l = open_loader(true, 0, 1);
	const char *path, *idx;
	for (uint32_t i = 0; i < NR_SHARDS; i++) {
		char want[32];
		cr_assert_eq(loader_shard_files(l, i, &path, &idx), 0);
		snprintf(want, sizeof(want), "/shard_%02u.bin", i);
		cr_assert_str_eq(strrchr(path, '/'), want);
		cr_assert_null(idx);
	}
	cr_assert_eq(loader_shard_files(l, NR_SHARDS, &path, &idx), -ENOENT);
	loader_free(l);
}
