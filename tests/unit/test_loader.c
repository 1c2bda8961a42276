/* The loader end to end on real files (loader/loader.c): batches equal the tokens read
 * directly from the files, io_uring equals pread, exact resume, bad shards named at open,
 * twenty thousand shards under a low descriptor limit. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "loader/loader_i.h"

static char dir[64];
static const uint64_t counts[] = { 3001, 129, 5000, 64, 2222 }; /* tokens per shard */
#define NR_SHARDS 5

static uint32_t token_at(int shard, uint64_t i, uint32_t w)
{
	uint64_t x = (shard + 1) * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;

	x ^= x >> 29;
	return w == 2 ? (uint32_t)(x & 0xffff) : (uint32_t)(x & 0x7fffffff);
}

static void write_shards(uint32_t w)
{
	for (int s = 0; s < NR_SHARDS; s++) {
		int32_t hdr[256] = { w == 2 ? 20240520 : 20240801, w == 2 ? 1 : 7,
			(int32_t)counts[s], 0 };
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "%s/shard_%02d.bin", dir, s);
		f = fopen(path, "wb");
		cr_assert_not_null(f);
		fwrite(hdr, sizeof(hdr), 1, f);
		for (uint64_t i = 0; i < counts[s]; i++) {
			uint32_t t = token_at(s, i, w);

			fwrite(&t, w, 1, f);
		}
		fclose(f);
	}
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry_test_loader_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	unsetenv("FERRY_LOADER_IO");
	unsetenv("FERRY_LOADER_THREADS");
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
	unsetenv("FERRY_LOADER_IO");
}

TestSuite(loader, .init = setup, .fini = teardown);

static struct loader *open_loader(uint32_t B, uint32_t T, bool shuffle, uint32_t rank,
	uint32_t world, uint32_t nr_buffers)
{
	/* Small blocks and windows, so that these small shards make several whole windows and
	 * a tail in the shuffled order. */
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 1234,
		.shuffle = shuffle,
		.rank = rank,
		.world_size = world,
		.nr_buffers = nr_buffers,
		.device = -1,
		.block_bytes = 600,
		.window_blocks = 3 };
	struct loader *l;
	char err[256];

	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	return l;
}

/* The oracle: which shard and token a global sample is, from the counts alone. */
static void locate(uint64_t g, uint32_t T, int *shard, uint64_t *tok)
{
	for (int s = 0; s < NR_SHARDS; s++) {
		uint64_t n = counts[s] > T ? (counts[s] - 1) / T : 0;

		if (g < n) {
			*shard = s;
			*tok = g * T;
			return;
		}
		g -= n;
	}
	cr_assert_fail("sample beyond the dataset");
}

static void check_batch(const struct loader_batch *b, uint32_t B, uint32_t T, uint32_t w,
	bool shuffle, uint32_t rank, uint32_t world)
{
	struct sampler s;
	uint64_t total = 0;

	for (int i = 0; i < NR_SHARDS; i++)
		total += counts[i] > T ? (counts[i] - 1) / T : 0;
	sampler_init(&s, total, B, world, rank, 1234, shuffle, 600 / (T * w), 3, 0);
	for (uint32_t j = 0; j < B; j++) {
		uint64_t g = sampler_sample(&s, b->state.epoch, b->state.position, j), tok;
		int sh;

		locate(g, T, &sh, &tok);
		for (uint32_t t = 0; t < T; t++) {
			cr_assert_eq((uint32_t)b->inputs[j * T + t], token_at(sh, tok + t, w),
				"row %u col %u", j, t);
			cr_assert_eq((uint32_t)b->targets[j * T + t], token_at(sh, tok + t + 1, w));
		}
	}
}

Test(loader, shuffled_batches_equal_the_tokens_in_the_files)
{
	struct loader *l;
	struct loader_batch b;

	write_shards(2);
	l = open_loader(4, 32, true, 1, 2, 3);
	cr_assert_eq(loader_vocab_size(l), 50257);
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0, "%s", loader_last_error(l));
		cr_assert_null(b.d_inputs);
		cr_assert_geq(b.wait_ms, 0);
		check_batch(&b, 4, 32, 2, true, 1, 2);
	}
	loader_free(l);
}

Test(loader, sequential_batches_of_uint32_tokens_equal_the_files_in_order)
{
	struct loader *l;
	struct loader_batch b;

	write_shards(4);
	l = open_loader(3, 50, false, 0, 1, 2);
	for (uint64_t i = 0; i < 2 * loader_steps_per_epoch(l) + 3; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0, "%s", loader_last_error(l));
		check_batch(&b, 3, 50, 4, false, 0, 1);
	}
	loader_free(l);
}

/* io: "pread" (the twin), "uring" (io_uring alone), NULL (default: cached data by
 * preadv2(RWF_NOWAIT), the rest by io_uring); threads: reader threads, NULL for default. */
static int32_t *collect(const char *io, const char *threads, uint32_t B, uint32_t T, int n,
	uint32_t nr_buffers)
{
	int32_t *out = malloc((size_t)n * 2 * B * T * 4);
	struct loader *l;
	struct loader_batch b;

	if (io)
		setenv("FERRY_LOADER_IO", io, 1);
	else
		unsetenv("FERRY_LOADER_IO");
	if (threads)
		setenv("FERRY_LOADER_THREADS", threads, 1);
	else
		unsetenv("FERRY_LOADER_THREADS");
	l = open_loader(B, T, true, 0, 1, nr_buffers);
	cr_assert_str_eq(loader_path_name(l), io && !strcmp(io, "pread") ? "pread" : "io_uring");
	for (int i = 0; i < n; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		memcpy(out + (size_t)i * 2 * B * T, b.inputs, (size_t)B * T * 4);
		memcpy(out + (size_t)i * 2 * B * T + B * T, b.targets, (size_t)B * T * 4);
	}
	loader_free(l);
	unsetenv("FERRY_LOADER_IO");
	unsetenv("FERRY_LOADER_THREADS");
	return out;
}

Test(loader, io_uring_and_pread_give_identical_batches)
{
	write_shards(2);
	int32_t *a = collect("pread", "1", 8, 20, 150, 4),
		*u = collect("uring", "1", 8, 20, 150, 4);
	int32_t *d = collect(NULL, NULL, 8, 20, 150, 4);

	cr_assert_eq(memcmp(a, u, (size_t)150 * 2 * 8 * 20 * 4), 0);
	cr_assert_eq(memcmp(a, d, (size_t)150 * 2 * 8 * 20 * 4), 0, "nowait reads differ");
	free(a);
	free(u);
	free(d);
}

Test(loader, several_reader_threads_give_the_batches_of_one_in_the_same_order)
{
	write_shards(2);
	int32_t *one = collect("pread", "1", 4, 16, 400, 2);
	int32_t *many = collect(NULL, "4", 4, 16, 400, 9);

	cr_assert_eq(memcmp(one, many, (size_t)400 * 2 * 4 * 16 * 4), 0);
	free(one);
	free(many);
}

Test(loader, several_readers_resume_exactly_after_a_seek_while_filling)
{
	enum { B = 3, T = 24 };
	struct loader *l;
	struct loader_batch b;
	struct loader_state st = { 1, 5 };

	write_shards(2);
	setenv("FERRY_LOADER_THREADS", "3", 1);
	l = open_loader(B, T, true, 0, 1, 6);
	for (int round = 0; round < 20; round++) {
		/* Seek while the readers are busy filling the ring ahead. */
		st.position = (st.position * 7 + 3) % loader_steps_per_epoch(l);
		cr_assert_eq(loader_seek(l, &st), 0);
		for (int i = 0; i < 4; i++) {
			cr_assert_eq(loader_next_batch(l, &b), 0, "%s", loader_last_error(l));
			check_batch(&b, B, T, 2, true, 0, 1);
		}
		cr_assert_eq(b.state.epoch * 1000000 + b.state.position,
			(st.epoch + (st.position + 3) / loader_steps_per_epoch(l)) * 1000000 +
				(st.position + 3) % loader_steps_per_epoch(l));
	}
	loader_free(l);
	unsetenv("FERRY_LOADER_THREADS");
}

Test(loader, refuses_more_buffers_than_the_ring_tracks)
{
	struct loader_config cfg = { .paths = dir,
		.batch = 2,
		.seq_len = 8,
		.nr_buffers = 65,
		.device = -1 };
	struct loader *l = (void *)1;
	char err[256] = "";

	write_shards(2);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(l);
	cr_assert(strstr(err, "65"), "%s", err);
}

Test(loader, resumes_exactly_at_every_position)
{
	enum { B = 2, T = 40 };
	struct loader *l;
	struct loader_batch b;
	uint64_t steps, n;
	int32_t *base;
	struct loader_state *states, st;

	write_shards(2);
	l = open_loader(B, T, true, 0, 1, 3);
	steps = loader_steps_per_epoch(l);
	n = steps * 2 + 5;
	base = malloc(n * 2 * B * T * 4);
	states = malloc(n * sizeof(*states));
	for (uint64_t i = 0; i < n; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		states[i] = b.state;
		memcpy(base + i * 2 * B * T, b.inputs, B * T * 4);
		memcpy(base + i * 2 * B * T + B * T, b.targets, B * T * 4);
		loader_get_state(l, &st);
		if (i + 1 < n)
			cr_assert(st.epoch == (i + 1) / steps && st.position == (i + 1) % steps);
	}
	cr_assert_eq(states[steps].epoch, 1);
	cr_assert_eq(states[steps].position, 0);
	cr_assert_neq(memcmp(base, base + steps * 2 * B * T, B * T * 4), 0,
		"epoch 1 starts with another batch than epoch 0");
	/* Seek the same loader to every saved state, in a scrambled order. */
	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = (k * 7) % n;

		cr_assert_eq(loader_seek(l, &states[i]), 0);
		cr_assert_eq(loader_next_batch(l, &b), 0);
		cr_assert_eq(b.state.epoch, states[i].epoch);
		cr_assert_eq(b.state.position, states[i].position);
		cr_assert_eq(memcmp(b.inputs, base + i * 2 * B * T, B * T * 4), 0, "batch %llu",
			(unsigned long long)i);
		cr_assert_eq(memcmp(b.targets, base + i * 2 * B * T + B * T, B * T * 4), 0);
		/* and the one after it, read ahead after the seek */
		if (i + 1 < n) {
			cr_assert_eq(loader_next_batch(l, &b), 0);
			cr_assert_eq(memcmp(b.inputs, base + (i + 1) * 2 * B * T, B * T * 4), 0);
		}
	}
	loader_free(l);
	/* A fresh loader (a restart) resumes the same way. */
	l = open_loader(B, T, true, 0, 1, 2);
	cr_assert_eq(loader_seek(l, &states[n - 3]), 0);
	for (uint64_t i = n - 3; i < n; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		cr_assert_eq(memcmp(b.inputs, base + i * 2 * B * T, B * T * 4), 0);
	}
	st = (struct loader_state){ 0, steps };
	cr_assert_eq(loader_seek(l, &st), -EINVAL);
	loader_free(l);
	free(base);
	free(states);
}

/* The order's shape is part of the config, never of the environment: a resume in another
 * environment reads the same batches, and the loader says the settings a checkpoint saves. */
Test(loader, order_settings_come_from_the_config_and_not_the_environment)
{
	enum { B = 2, T = 40, N = 40 };
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 99,
		.shuffle = true,
		.world_size = 1,
		.device = -1,
		.block_bytes = 600,
		.window_blocks = 3 };
	struct loader *l;
	struct loader_batch b;
	int32_t *first = malloc((size_t)N * B * T * 4);
	uint32_t bb, wb;
	char err[256];
	bool differs = false;

	write_shards(2);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	loader_get_order(l, &bb, &wb);
	cr_assert_eq(bb, 600);
	cr_assert_eq(wb, 3);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		memcpy(first + (size_t)i * B * T, b.inputs, B * T * 4);
	}
	loader_free(l);
	/* The old knobs in the environment change nothing. */
	setenv("FERRY_LOADER_BLOCK_BYTES", "4000", 1);
	setenv("FERRY_LOADER_WINDOW_BLOCKS", "5", 1);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	unsetenv("FERRY_LOADER_BLOCK_BYTES");
	unsetenv("FERRY_LOADER_WINDOW_BLOCKS");
	for (int i = 0; i < N; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		cr_assert_eq(memcmp(first + (size_t)i * B * T, b.inputs, B * T * 4), 0,
			"batch %d changed with the environment", i);
	}
	loader_free(l);
	/* Other settings give another order (so the settings matter and must be saved). */
	cfg.block_bytes = 4000;
	cfg.window_blocks = 5;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	for (int i = 0; i < N && !differs; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0);
		differs = memcmp(first + (size_t)i * B * T, b.inputs, B * T * 4) != 0;
	}
	cr_assert(differs, "block 4000 x 5 gave the order of block 600 x 3");
	loader_free(l);
	/* 0 means the defaults, and they are what the loader says it uses. */
	cfg.block_bytes = cfg.window_blocks = 0;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	loader_get_order(l, &bb, &wb);
	cr_assert_eq(bb, LOADER_DEFAULT_BLOCK_BYTES);
	cr_assert_eq(wb, LOADER_DEFAULT_WINDOW_BLOCKS);
	loader_free(l);
	/* Out of range: one line, no loader. */
	cfg.window_blocks = LOADER_MAX_WINDOW_BLOCKS + 1;
	err[0] = '\0';
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "window") && !strchr(err, '\n'), "%s", err);
	free(first);
}

/* The fast path checks blocks against sums the daemon computed with XXH3_64bits: its own hash
 * (libxxhash's x86 dispatch where present) must be that same function, at every length a
 * block can have (the last block of a file is short). */
Test(loader, block_hash_is_xxh3_64_with_seed_0)
{
	size_t n = 64 << 10;
	unsigned char *buf = malloc(n + 1);
	uint64_t x = 1;

	for (size_t i = 0; i <= n; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (unsigned char)(x >> 56);
	}
	for (size_t len = 0; len <= n; len = len < 300 ? len + 1 : len * 3 + 7) {
		cr_assert_eq(block_hash(buf, len), XXH3_64bits(buf, len), "length %zu", len);
		cr_assert_eq(block_hash(buf + 1, len), XXH3_64bits_withSeed(buf + 1, len, 0));
	}
	cr_assert_eq(block_hash(buf, n), XXH3_64bits(buf, n));
	cr_assert_neq(block_hash(buf, n), block_hash(buf + 1, n));
	free(buf);
}

Test(loader, a_malformed_shard_is_named_when_the_loader_opens)
{
	struct loader_config cfg = { .paths = dir, .batch = 2, .seq_len = 16, .device = -1 };
	struct loader *l = NULL;
	char path[128], err[256];
	FILE *f;

	write_shards(2);
	/* Shard 2: right size, wrong magic: only a read of its header can tell. */
	snprintf(path, sizeof(path), "%s/shard_02.bin", dir);
	f = fopen(path, "r+b");
	fwrite("XXXX", 4, 1, f);
	fclose(f);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(l);
	cr_assert(strstr(err, "shard_02.bin") && strstr(err, "magic") && !strchr(err, '\n'), "%s",
		err);
}

Test(loader, a_uint32_shard_among_uint16_ones_is_named_when_the_loader_opens)
{
	struct loader_config cfg = { .paths = dir,
		.batch = 2,
		.seq_len = 16,
		.device = -1,
		.shuffle = true };
	struct loader *l = NULL;
	char path[128], err[512];
	int32_t hdr[256] = { 20240801, 7, 600, 0 };
	FILE *f;

	write_shards(2);
	/* 600 uint32 tokens are 1200 uint16 ones: the size alone fits the first shard's width. */
	snprintf(path, sizeof(path), "%s/shard_03.bin", dir);
	f = fopen(path, "wb");
	fwrite(hdr, sizeof(hdr), 1, f);
	for (int i = 0; i < 600; i++)
		fwrite(&i, 4, 1, f);
	fclose(f);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(l);
	cr_assert(strstr(err, "shard_03.bin: token width u32, the first shard's") &&
			  strstr(err, "shard_00.bin) is u16"),
		"%s", err);
}

Test(loader, refuses_a_fifo_at_once_instead_of_waiting_for_a_writer, .timeout = 20)
{
	struct loader_config cfg = { .batch = 2, .seq_len = 16, .device = -1 };
	struct loader *l = NULL;
	char path[128], err[256];

	snprintf(path, sizeof(path), "%s/fifo.bin", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	cfg.paths = path;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "fifo.bin: not a regular file (a FIFO)"), "%s", err);
}

/* Tiny shards, tokens a function of (shard, index): TINY_TOKENS each, TINY_TOKENS / T - 1
 * samples of T + 1 tokens. */
#define TINY_SHARDS 20000
#define TINY_TOKENS 49

static uint32_t tiny_token(uint32_t shard, uint32_t i)
{
	return (shard * 31 + i * 7) & 0xffff;
}

static void write_tiny_shards(void)
{
	int32_t hdr[256] = { 20240520, 1, TINY_TOKENS, 0 };
	uint16_t toks[TINY_TOKENS];
	char path[128];

	for (uint32_t s = 0; s < TINY_SHARDS; s++) {
		FILE *f;

		for (uint32_t i = 0; i < TINY_TOKENS; i++)
			toks[i] = (uint16_t)tiny_token(s, i);
		snprintf(path, sizeof(path), "%s/t_%06u.bin", dir, s);
		f = fopen(path, "wb");
		cr_assert_not_null(f);
		fwrite(hdr, sizeof(hdr), 1, f);
		fwrite(toks, sizeof(toks), 1, f);
		cr_assert_eq(fclose(f), 0);
	}
}

static uint32_t open_fds(void)
{
	char cmd[64];
	FILE *p;
	unsigned n = 0;

	snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | wc -l", (int)getpid());
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_eq(fscanf(p, "%u", &n), 1);
	pclose(p);
	return n;
}

/* 20,000 shards under a limit of 256 descriptors: every batch equals the files' tokens at the
 * samples the order names, in shuffled (one window over all the shards) and file order. */
static void check_tiny_shards(bool shuffle, uint32_t nr_batches)
{
	const uint32_t B = 8, T = 16, per = (TINY_TOKENS - 1) / T;
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 5,
		.shuffle = shuffle,
		.device = -1 };
	struct rlimit rl = { 256, 256 };
	struct sampler smp;
	struct loader *l;
	char err[256];

	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	sampler_init(&smp, (uint64_t)TINY_SHARDS * per, B, 1, 0, 5, shuffle,
		LOADER_DEFAULT_BLOCK_BYTES / (T * 2), LOADER_DEFAULT_WINDOW_BLOCKS, 0);
	for (uint32_t n = 0; n < nr_batches; n++) {
		struct loader_batch b;

		cr_assert_eq(loader_next_batch(l, &b), 0, "batch %u: %s", n, loader_last_error(l));
		for (uint32_t j = 0; j < B; j++) {
			uint64_t g = sampler_sample(&smp, b.state.epoch, b.state.position, j);
			uint32_t s = (uint32_t)(g / per), o = (uint32_t)(g % per) * T;

			for (uint32_t t = 0; t < T; t++) {
				cr_assert_eq((uint32_t)b.inputs[j * T + t], tiny_token(s, o + t),
					"batch %u row %u col %u", n, j, t);
				cr_assert_eq((uint32_t)b.targets[j * T + t],
					tiny_token(s, o + t + 1));
			}
		}
	}
	/* The dataset's share (256 / 8) and the readers' io_urings, with stdio and
	 * criterion's own: far below the limit. */
	cr_assert_lt(open_fds(), 100, "%u fds open", open_fds());
	loader_free(l);
}

Test(loader, twenty_thousand_tiny_shards_load_shuffled_under_a_limit_of_256_fds, .timeout = 120)
{
	write_tiny_shards();
	/* 60,000 samples: a tail-only window over every shard; 2 epochs' worth of crossings. */
	check_tiny_shards(true, 7600);
}

Test(loader, twenty_thousand_tiny_shards_load_in_file_order_under_a_limit_of_256_fds,
	.timeout = 120)
{
	write_tiny_shards();
	check_tiny_shards(false, 3000);
}

Test(loader, a_seek_past_the_epoch_fails_with_a_reason)
{
	struct loader *l;
	struct loader_state st = { 0, 0 };

	write_shards(2);
	l = open_loader(2, 16, true, 0, 1, 2);
	st.position = loader_steps_per_epoch(l);
	cr_assert_eq(loader_seek(l, &st), -EINVAL);
	cr_assert(strstr(loader_last_error(l), "past the"), "%s", loader_last_error(l));
	loader_free(l);
}

Test(loader, refuses_a_dataset_smaller_than_one_step)
{
	struct loader_config cfg = { .paths = dir, .batch = 1000, .seq_len = 64, .device = -1 };
	struct loader *l = NULL;
	char err[256];

	write_shards(2);
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(l);
	cr_assert(strstr(err, "fewer than one step"), "%s", err);
	cfg.batch = 1;
	cfg.rank = 2;
	cfg.world_size = 2;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), -EINVAL);
}

Test(loader, reads_ahead_so_a_consumer_that_computes_rarely_waits)
{
	struct loader *l;
	struct loader_batch b;
	double waited = 0;

	write_shards(2);
	l = open_loader(4, 32, true, 0, 1, 4);
	cr_assert_eq(loader_next_batch(l, &b), 0);
	for (int i = 0; i < 20; i++) {
		usleep(5000); /* "compute" */
		cr_assert_eq(loader_next_batch(l, &b), 0);
		waited += b.wait_ms;
	}
	/* Files in page cache, 5 ms of compute per batch: the ring is full each time. */
	cr_assert_lt(waited / 20, 2.0, "mean wait %.3f ms", waited / 20);
	loader_free(l);
}

/* loader_swap_batch_buffer (the Python binding's lent batches): every batch taken out of the
 * ring and kept, many more than the ring's buffers, still holds its own tokens once the readers
 * have filled the spares put in their place; nothing is held before the first batch or after a
 * seek. In file order a batch is one run (targets at inputs + 1), shuffled two halves. */
static void keep_every_batch(bool shuffle)
{
	enum { B = 4, T = 16, N = 40 };
	struct loader *l = open_loader(B, T, shuffle, 0, 1, 2);
	struct loader_batch b, kept[N];
	int32_t *held[N];
	int32_t *spare = malloc((size_t)2 * B * T * sizeof(int32_t));

	cr_assert_null(loader_swap_batch_buffer(l, spare), "a buffer before the first batch");
	for (int i = 0; i < N; i++) {
		cr_assert_eq(loader_next_batch(l, &b), 0, "%s", loader_last_error(l));
		held[i] = loader_swap_batch_buffer(l, spare);
		cr_assert_not_null(held[i]);
		cr_assert_eq(b.inputs, held[i], "batch %d is not at the buffer's start", i);
		kept[i] = b;
		spare = malloc((size_t)2 * B * T * sizeof(int32_t));
	}
	for (int i = 0; i < N; i++) {
		check_batch(&kept[i], B, T, 2, shuffle, 0, 1);
		free(held[i]);
	}
	struct loader_state st = { 0, 3 };
	cr_assert_eq(loader_seek(l, &st), 0);
	cr_assert_null(loader_swap_batch_buffer(l, spare), "a buffer held across a seek");
	free(spare);
	loader_free(l);
}

Test(loader, batches_swapped_out_of_the_ring_keep_their_tokens_shuffled)
{
	write_shards(2);
	keep_every_batch(true);
}

Test(loader, batches_swapped_out_of_the_ring_keep_their_tokens_in_file_order)
{
	write_shards(2);
	keep_every_batch(false);
}
