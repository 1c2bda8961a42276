/* The ranks' agreement at start (train/agree.c, comm_differing in train/comm.c): a table of
 * named hashes compared across ranks, and the identity of a dataset. The other rank is a fake
 * collective that takes the maximum with a table given here. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader.h"
#include "train/agree.h"
#include "train/comm.h"

/* The other rank's hashes, as comm_differing on it would hand them to the collective. */
static uint64_t other[COMM_DIFFERING_MAX];
static size_t nr_other;

static void fake_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	size_t half = n / 2;
	cr_assert_eq(half, nr_other, "the ranks' tables differ in length");
	for (size_t i = 0; i < half; i++) {
		if (other[i] > buf[i])
			buf[i] = other[i];
		if (~other[i] > buf[half + i])
			buf[half + i] = ~other[i];
	}
}

static const struct comm_ops fake_ops = { .name = "fake", .allreduce_max_u64 = fake_max_u64 };

static struct comm two_ranks(void)
{
	return (struct comm){ .ops = &fake_ops, .rank = 0, .world_size = 2 };
}

/* The other rank's table: this one's, with one value changed when change >= 0. */
static void other_from(const struct agree *a, int change)
{
	nr_other = a->nr_items + 1;
	for (unsigned i = 0; i < a->nr_items; i++)
		other[i] = a->items[i].hash ^ (i == (unsigned)change ? 1 : 0);
	other[a->nr_items] = a->nr_items;
}

static void fill(struct agree *a, const char *seq_len)
{
	agree_init(a);
	agree_add(a, "--data", "/data/train_*.bin");
	agree_add(a, "--seq-len", seq_len);
	agree_add(a, "--lr", "0.000600000028");
}

Test(agree, equal_values_hash_alike_and_different_ones_do_not)
{
	struct agree a, b;
	fill(&a, "256");
	fill(&b, "256");
	cr_assert_eq(a.items[1].hash, b.items[1].hash);
	fill(&b, "1024");
	cr_assert_neq(a.items[1].hash, b.items[1].hash);
	cr_assert_str_eq(b.items[1].value, "1024");
	cr_assert_str_eq(b.items[1].name, "--seq-len");
}

Test(agree, one_rank_always_agrees)
{
	struct agree a;
	struct comm c = { .ops = &comm_none_ops, .rank = 0, .world_size = 1 };
	fill(&a, "256");
	cr_assert_eq(agree_compare(&a, &c), -1);
}

Test(agree, two_ranks_with_the_same_table_agree)
{
	struct agree a;
	struct comm c = two_ranks();
	fill(&a, "256");
	other_from(&a, -1);
	cr_assert_eq(agree_compare(&a, &c), -1);
}

Test(agree, the_differing_setting_is_named_whichever_rank_holds_the_larger_hash)
{
	struct agree a, b;
	struct comm c = two_ranks();
	fill(&a, "256");
	fill(&b, "64");
	/* each rank of the pair sees the other's table */
	other_from(&b, -1);
	cr_assert_eq(agree_compare(&a, &c), 1);
	other_from(&a, -1);
	cr_assert_eq(agree_compare(&b, &c), 1);
	other_from(&a, 2);
	cr_assert_eq(agree_compare(&a, &c), 2);
}

Test(agree, the_line_names_the_setting_and_this_ranks_value)
{
	struct agree a;
	char line[512];
	fill(&a, "64");
	agree_format(&a, 1, 3, line, sizeof(line));
	cr_assert(strstr(line, "rank 3: ") == line, "%s", line);
	cr_assert_not_null(strstr(line, "different --seq-len (here: 64)"), "%s", line);
}

Test(agree, a_long_value_keeps_its_end)
{
	struct agree a;
	char path[300];
	memset(path, 'x', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	memcpy(path + sizeof(path) - 10, "train.bin", 9);
	agree_init(&a);
	agree_add(&a, "--data", path);
	cr_assert(strncmp(a.items[0].value, "...", 3) == 0);
	cr_assert_not_null(strstr(a.items[0].value, "train.bin"));
	cr_assert_lt(strlen(a.items[0].value), sizeof(a.items[0].value));
}

Test(comm, differing_marks_exactly_the_values_that_differ)
{
	struct comm c = two_ranks();
	uint64_t v[4] = { 0, UINT64_MAX, 5, 7 };
	unsigned char d[4];
	nr_other = 4;
	memcpy(other, v, sizeof(v));
	other[2] = 6;
	other[1] = 0;
	cr_assert_eq(comm_differing(&c, v, 4, d), 0);
	cr_assert(!d[0] && d[1] && d[2] && !d[3]);
	cr_assert_eq(comm_differing(&c, v, COMM_DIFFERING_MAX + 1, d), -EINVAL);
}

/* ---- a dataset's identity, on real llm.c shards ---- */

static char dir[64];

static void write_shard(const char *name, uint32_t nr_tokens)
{
	char path[128];
	int32_t hdr[256] = { 20240520, 1, (int32_t)nr_tokens, 256 };
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	fwrite(hdr, sizeof(hdr), 1, f);
	for (uint32_t i = 0; i < nr_tokens; i++) {
		uint16_t t = (uint16_t)(i % 256);
		fwrite(&t, 2, 1, f);
	}
	fclose(f);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry_test_agree_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	write_shard("a.bin", 4000);
	write_shard("b.bin", 3000);
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* The three identity hashes (files, sizes, versions) of dir's shards. */
static void identity(uint64_t h[3])
{
	struct loader_config cfg = { .batch = 2, .seq_len = 16, .seed = 1, .device = -1 };
	struct loader *l;
	struct agree a;
	char glob[96], err[256];
	snprintf(glob, sizeof(glob), "%s/*.bin", dir);
	cfg.paths = glob;
	cr_assert_eq(loader_open(&l, &cfg, err, sizeof(err)), 0, "%s", err);
	agree_init(&a);
	cr_assert_eq(agree_add_dataset(&a, "--data", l, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(a.nr_items, 3);
	cr_assert_str_eq(a.items[0].name, "--data files");
	cr_assert_str_eq(a.items[0].value, "2 file(s)");
	cr_assert_str_eq(a.items[1].name, "--data sizes");
	for (int i = 0; i < 3; i++)
		h[i] = a.items[i].hash;
	loader_free(l);
}

static void set_mtime(const char *name, time_t t)
{
	char path[128];
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	cr_assert_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

Test(agree_dataset, is_stable_and_tells_files_sizes_and_versions_apart, .init = setup,
	.fini = teardown)
{
	uint64_t h0[3], h[3];
	set_mtime("a.bin", 1000000);
	set_mtime("b.bin", 1000000);
	identity(h0);
	identity(h);
	cr_assert(h[0] == h0[0] && h[1] == h0[1] && h[2] == h0[2]);

	set_mtime("b.bin", 2000000); /* a copy made at another time */
	identity(h);
	cr_assert(h[0] == h0[0] && h[1] == h0[1] && h[2] != h0[2]);

	set_mtime("b.bin", 1000000);
	write_shard("b.bin", 3002); /* two tokens more */
	set_mtime("b.bin", 1000000);
	identity(h);
	cr_assert(h[0] == h0[0] && h[1] != h0[1] && h[2] == h0[2]);

	char from[128], to[128];
	snprintf(from, sizeof(from), "%s/b.bin", dir);
	snprintf(to, sizeof(to), "%s/c.bin", dir);
	cr_assert_eq(rename(from, to), 0);
	identity(h);
	cr_assert_neq(h[0], h0[0]);
}
