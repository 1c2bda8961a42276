/* Token file formats and shard lists (loader/shard.c): llm.c headers, raw tokens, Megatron
 * .idx files written by numpy, header checks over many shards, the LRU of open shards, special
 * files and huge sparse .idx files refused at once. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_i.h"

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry_test_shard_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(shard, .init = make_dir, .fini = remove_dir);

/* An llm.c file with the given header words and n_tokens tokens of width w after it. */
static char *write_llmc(const char *name, int32_t magic, int32_t version, int32_t count,
	int32_t vocab, uint64_t n_tokens, uint32_t w)
{
	int32_t hdr[256] = { magic, version, count, vocab };
	char *path;
	FILE *f;

	cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	fwrite(hdr, sizeof(hdr), 1, f);
	for (uint64_t i = 0; i < n_tokens; i++) {
		uint32_t t = (uint32_t)(i * 7 + 3);

		fwrite(&t, w, 1, f);
	}
	fclose(f);
	return path;
}

static int probe(const char *path, struct shard_info *info, char *err)
{
	return shard_probe(path, LOADER_FORMAT_AUTO, info, err, 256);
}

Test(shard, parses_a_good_uint16_llmc_header)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("a.bin", 20240520, 1, 1000, 256, 1000, 2);

	cr_assert_eq(probe(p, &info, err), 0, "%s", err);
	cr_assert_eq(info.format, LOADER_FORMAT_LLMC);
	cr_assert_eq(info.token_bytes, 2);
	cr_assert_eq(info.nr_tokens, 1000);
	cr_assert_eq(info.data_offset, 1024);
	cr_assert_eq(info.vocab, 256);
	free(p);
}

Test(shard, parses_a_good_uint32_llmc_header)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("a.bin", 20240801, 7, 333, 0, 333, 4);

	cr_assert_eq(probe(p, &info, err), 0, "%s", err);
	cr_assert_eq(info.token_bytes, 4);
	cr_assert_eq(info.nr_tokens, 333);
	cr_assert_eq(info.vocab, 0);
	free(p);
}

Test(shard, rejects_a_file_shorter_than_the_header)
{
	struct shard_info info;
	char err[256], *p;
	FILE *f;

	cr_assert(asprintf(&p, "%s/short.bin", dir) > 0);
	f = fopen(p, "wb");
	int32_t magic = 20240520;
	fwrite(&magic, 4, 1, f);
	fclose(f);
	cr_assert_eq(probe(p, &info, err), -EINVAL);
	cr_assert(strstr(err, "truncated"), "%s", err);
	free(p);
}

Test(shard, rejects_a_truncated_token_section)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("t.bin", 20240520, 1, 1000, 256, 999, 2);

	cr_assert_eq(probe(p, &info, err), -EINVAL);
	cr_assert(strstr(err, "1000 tokens") && strstr(err, "3022"), "%s", err);
	free(p);
}

Test(shard, rejects_a_wrong_magic)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("m.bin", 12345, 1, 10, 0, 10, 2);

	cr_assert_eq(probe(p, &info, err), -EINVAL);
	cr_assert(strstr(err, "magic"), "%s", err);
	free(p);
}

Test(shard, rejects_a_version_that_does_not_match_the_magic)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("v.bin", 20240520, 7, 10, 0, 10, 2);

	cr_assert_eq(probe(p, &info, err), -EINVAL);
	cr_assert(strstr(err, "version"), "%s", err);
	free(p);
}

Test(shard, rejects_a_file_longer_than_its_count)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("l.bin", 20240520, 1, 10, 0, 11, 2);

	cr_assert_eq(probe(p, &info, err), -EINVAL);
	free(p);
}

Test(shard, rejects_huge_and_negative_counts_without_overflow)
{
	struct shard_info info;
	char err[256];
	char *p = write_llmc("h.bin", 20240801, 7, INT32_MAX, 0, 10, 4);
	char *q = write_llmc("n.bin", 20240520, 1, -5, 0, 10, 2);

	cr_assert_eq(probe(p, &info, err), -EINVAL);
	cr_assert(strstr(err, "2147483647"), "%s", err);
	cr_assert_eq(probe(q, &info, err), -EINVAL);
	cr_assert(strstr(err, "-5"), "%s", err);
	free(p);
	free(q);
}

Test(shard, header_parser_checks_sizes_above_four_gigabytes_in_64_bits)
{
	/* A 2^31-1 token uint32 shard is 8 GiB: the size check must not wrap at 32 bits. */
	int32_t hdr[256] = { 20240801, 7, INT32_MAX, 0 };
	uint64_t size = 1024 + (uint64_t)INT32_MAX * 4;
	struct shard_info info;
	char err[256];

	cr_assert_eq(shard_parse_llmc(hdr, sizeof(hdr), size, &info, err, sizeof(err)), 0, "%s",
		err);
	cr_assert_eq(info.nr_tokens, (uint64_t)INT32_MAX);
	cr_assert_eq(shard_parse_llmc(hdr, sizeof(hdr), size - (1ull << 32), &info, err,
			     sizeof(err)),
		-EINVAL);
}

Test(shard, raw_files_take_their_count_from_the_size)
{
	struct shard_info info;
	char err[256], *p;
	FILE *f;

	cr_assert(asprintf(&p, "%s/raw", dir) > 0);
	f = fopen(p, "wb");
	for (int i = 0; i < 102; i++)
		fputc(i, f);
	fclose(f);
	cr_assert_eq(shard_probe(p, LOADER_FORMAT_RAW_U16, &info, err, 256), 0);
	cr_assert_eq(info.nr_tokens, 51);
	cr_assert_eq(shard_probe(p, LOADER_FORMAT_RAW_U32, &info, err, 256), -EINVAL);
	cr_assert(strstr(err, "multiple"), "%s", err);
	free(p);
}

/* numpy writes a Megatron pair (sizes int32 then pointers int64 right after a 34-byte header,
 * so neither is aligned) and an oracle line: total tokens, sequences, first 8 tokens. */
static void numpy_megatron(const char *name, int dtype, int nseq)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
		"/usr/bin/python3 - '%s/%s' %d %d <<'PY'\n"
		"import sys, struct, numpy as np\n"
		"base, code, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
		"dt = {8: np.uint16, 4: np.int32}[code]\n"
		"rng = np.random.default_rng(n)\n"
		"sizes = rng.integers(1, 60, size=n).astype(np.int32)\n"
		"toks = rng.integers(0, 60000, size=int(sizes.sum())).astype(dt)\n"
		"ptr = (np.concatenate([[0], np.cumsum(sizes)[:-1]]) * np.dtype(dt).itemsize)"
		".astype(np.int64)\n"
		"doc = np.arange(n + 1, dtype=np.int64)\n"
		"with open(base + '.idx', 'wb') as f:\n"
		"    f.write(b'MMIDIDX\\x00\\x00' + struct.pack('<QBQQ', 1, code, n, n + 1))\n"
		"    f.write(sizes.tobytes() + ptr.tobytes() + doc.tobytes())\n"
		"toks.tofile(base + '.bin')\n"
		"open(base + '.txt', 'w').write('%%d %%d %%s' %% (toks.size, n, "
		"' '.join(map(str, toks[:8]))))\n"
		"PY",
		dir, name, dtype, nseq);
	cr_assert_eq(system(cmd), 0, "python3 numpy failed");
}

static void read_oracle(const char *name, uint64_t *nr_tokens, uint64_t *nr_seqs, long first[8])
{
	char *p;
	FILE *f;
	unsigned long long a, b;

	cr_assert(asprintf(&p, "%s/%s.txt", dir, name) > 0);
	f = fopen(p, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%llu %llu", &a, &b), 2);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(fscanf(f, "%ld", &first[i]), 1);
	fclose(f);
	*nr_tokens = a;
	*nr_seqs = b;
	free(p);
}

Test(shard, parses_a_numpy_written_megatron_idx_with_unaligned_offsets)
{
	struct shard_info info;
	uint64_t nt, ns;
	long first[8];
	char err[256], *p;

	numpy_megatron("m16", 8, 37);
	read_oracle("m16", &nt, &ns, first);
	cr_assert(asprintf(&p, "%s/m16.idx", dir) > 0);
	cr_assert_eq(probe(p, &info, err), 0, "%s", err);
	cr_assert_eq(info.format, LOADER_FORMAT_MEGATRON);
	cr_assert_eq(info.token_bytes, 2);
	cr_assert_eq(info.nr_tokens, nt);
	cr_assert_eq(info.nr_seqs, ns);
	free(p);
	/* The .bin finds its .idx by name, by content (no llm.c magic). */
	cr_assert(asprintf(&p, "%s/m16.bin", dir) > 0);
	cr_assert_eq(probe(p, &info, err), 0, "%s", err);
	cr_assert_eq(info.nr_tokens, nt);
	free(p);
}

Test(shard, parses_an_int32_megatron_dataset)
{
	struct shard_info info;
	uint64_t nt, ns;
	long first[8];
	char err[256], *p;

	numpy_megatron("m32", 4, 11);
	read_oracle("m32", &nt, &ns, first);
	cr_assert(asprintf(&p, "%s/m32.idx", dir) > 0);
	cr_assert_eq(probe(p, &info, err), 0, "%s", err);
	cr_assert_eq(info.token_bytes, 4);
	cr_assert_eq(info.nr_tokens, nt);
	free(p);
}

Test(shard, rejects_megatron_idx_with_huge_counts_bad_pointers_or_short_bin)
{
	uint8_t idx[34 + 12 + 8];
	uint64_t v = 1, n = 1, docs = 1, big = 1ull << 60, ptr = 0;
	int32_t size = 5;
	struct shard_info info;
	char err[256];

	memcpy(idx, "MMIDIDX\0\0", 9);
	memcpy(idx + 9, &v, 8);
	idx[17] = 8;
	memcpy(idx + 18, &n, 8);
	memcpy(idx + 26, &docs, 8);
	memcpy(idx + 34, &size, 4);
	memcpy(idx + 38, &ptr, 8);
	memset(idx + 46, 0, 8);
	cr_assert_eq(shard_parse_megatron_idx(idx, sizeof(idx), 10, &info, err, 256), 0, "%s", err);
	cr_assert_eq(info.nr_tokens, 5);
	cr_assert_eq(shard_parse_megatron_idx(idx, sizeof(idx), 12, &info, err, 256), -EINVAL);
	memcpy(idx + 18, &big, 8);
	cr_assert_eq(shard_parse_megatron_idx(idx, sizeof(idx), 10, &info, err, 256), -EINVAL);
	cr_assert(strstr(err, "exceed"), "%s", err);
	memcpy(idx + 18, &n, 8);
	ptr = 2;
	memcpy(idx + 38, &ptr, 8);
	cr_assert_eq(shard_parse_megatron_idx(idx, sizeof(idx), 10, &info, err, 256), -EINVAL);
	cr_assert_eq(shard_parse_megatron_idx(idx, 20, 10, &info, err, 256), -EINVAL);
	cr_assert(strstr(err, "truncated"), "%s", err);
	idx[0] = 'X';
	cr_assert_eq(shard_parse_megatron_idx(idx, sizeof(idx), 10, &info, err, 256), -EINVAL);
	cr_assert(strstr(err, "magic"), "%s", err);
}

Test(shard, dataset_lists_a_glob_sorted_by_name_with_64_bit_sample_offsets)
{
	struct dataset ds;
	char err[256], glob[128];
	const uint64_t counts[] = { 500, 65, 64, 1000 };
	const char *names[] = { "s_b.bin", "s_a.bin", "s_c.bin", "s_d.bin" };

	for (int i = 0; i < 4; i++)
		free(write_llmc(names[i], 20240520, 1, (int32_t)counts[i], 0, counts[i], 2));
	snprintf(glob, sizeof(glob), "%s/s_*.bin", dir);
	cr_assert_eq(dataset_open(&ds, glob, LOADER_FORMAT_AUTO, 64, err, sizeof(err)), 0, "%s",
		err);
	cr_assert_eq(ds.nr_shards, 4);
	cr_assert(strstr(ds.shards[0].path, "s_a.bin"));
	cr_assert(strstr(ds.shards[3].path, "s_d.bin"));
	/* samples: (n - 1) / 64 -> a:1 b:7 c:0 d:15 */
	cr_assert_eq(ds.nr_samples, 1 + 7 + 0 + 15);
	cr_assert_eq(dataset_find(&ds, 0), 0);
	cr_assert_eq(dataset_find(&ds, 1), 1);
	cr_assert_eq(dataset_find(&ds, 7), 1);
	cr_assert_eq(dataset_find(&ds, 8), 3, "the empty shard c is skipped");
	dataset_done(&ds);
}

Test(shard, opening_many_shards_reads_only_the_first_header)
{
	struct dataset ds;
	char err[256];
	struct timespec t0, t1;

	/* 2000 shards whose headers are garbage but whose sizes fit: open must not notice. */
	free(write_llmc("x_00000.bin", 20240520, 1, 100, 0, 100, 2));
	for (int i = 1; i < 2000; i++) {
		char name[32];

		snprintf(name, sizeof(name), "x_%05d.bin", i);
		free(write_llmc(name, 777, 1, 100, 0, 100, 2));
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(dataset_open(&ds, dir, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), 0, "%s",
		err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_eq(ds.nr_shards, 2000);
	cr_assert_eq(ds.nr_samples, 2000ull * 6);
	cr_assert_eq(dataset_prepare(&ds, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(dataset_prepare(&ds, 1999, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "x_01999.bin") && strstr(err, "magic"), "%s", err);
	dataset_done(&ds);
}

Test(shard, keeps_the_number_of_open_shards_bounded)
{
	struct dataset ds;
	char err[256];

	for (int i = 0; i < DATASET_MAX_OPEN + 50; i++) {
		char name[32];

		snprintf(name, sizeof(name), "o_%05d.bin", i);
		free(write_llmc(name, 20240520, 1, 100, 0, 100, 2));
	}
	cr_assert_eq(dataset_open(&ds, dir, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), 0);
	for (uint32_t i = 0; i < ds.nr_shards; i++) {
		cr_assert_eq(dataset_prepare(&ds, i, err, sizeof(err)), 0, "%s", err);
		cr_assert_geq(ds.shards[i].fd, 0);
		cr_assert_leq(ds.nr_open, ds.max_open);
	}
	dataset_done(&ds);
}

Test(shard, open_shards_are_an_eighth_of_the_descriptor_limit)
{
	struct rlimit rl = { 256, 256 };

	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_assert_eq(dataset_max_open(), 32);
	rl.rlim_cur = 20;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_assert_eq(dataset_max_open(), DATASET_MIN_OPEN);
	rl.rlim_cur = 65536;
	rl.rlim_max = 65536;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		cr_assert_eq(dataset_max_open(), DATASET_MAX_OPEN);
}

Test(shard, closes_the_least_recently_used_unpinned_shard_first)
{
	struct rlimit rl = { 40, 40 };
	struct dataset ds;
	char err[256];

	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	for (int i = 0; i < 10; i++) {
		char name[32];

		snprintf(name, sizeof(name), "l_%02d.bin", i);
		free(write_llmc(name, 20240520, 1, 100, 0, 100, 2));
	}
	cr_assert_eq(dataset_open(&ds, dir, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), 0);
	cr_assert_eq(ds.max_open, 5);
	/* 0 pinned; 1..4 open, then 1 used again: 2 is the least recently used. */
	cr_assert_eq(dataset_pin(&ds, 0, err, sizeof(err)), 0, "%s", err);
	for (uint32_t i = 1; i <= 4; i++)
		cr_assert_eq(dataset_prepare(&ds, i, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(dataset_prepare(&ds, 1, err, sizeof(err)), 0);
	cr_assert_eq(dataset_prepare(&ds, 5, err, sizeof(err)), 0);
	cr_assert_eq(ds.nr_open, 5);
	cr_assert_eq(ds.shards[2].fd, -1, "the least recently used goes first");
	cr_assert_geq(ds.shards[1].fd, 0);
	for (uint32_t i = 6; i < 10; i++)
		cr_assert_eq(dataset_prepare(&ds, i, err, sizeof(err)), 0);
	cr_assert_geq(ds.shards[0].fd, 0, "a pinned shard is never closed");
	cr_assert_eq(ds.nr_open, 5);
	dataset_unpin(&ds, 0);
	cr_assert_eq(dataset_prepare(&ds, 2, err, sizeof(err)), 0);
	cr_assert_eq(ds.shards[6].fd, -1);
	cr_assert_geq(ds.shards[0].fd, 0, "unpinned just now, it is the most recently used");
	dataset_done(&ds);
}

Test(shard, check_all_names_the_first_shard_that_disagrees)
{
	struct dataset ds;
	char err[512];

	for (int i = 0; i < 600; i++) {
		char name[32];

		snprintf(name, sizeof(name), "c_%05d.bin", i);
		/* 300 and 301: 100 u32 tokens make 200 u16 ones, a size that fits. */
		if (i == 300 || i == 301)
			free(write_llmc(name, 20240801, 7, 100, 0, 100, 4));
		else
			free(write_llmc(name, 20240520, 1, 200, 0, 200, 2));
	}
	cr_assert_eq(dataset_open(&ds, dir, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), 0, "%s",
		err);
	cr_assert_eq(dataset_check_all(&ds, 4, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "c_00300.bin: token width u32, the first shard's (") &&
			  strstr(err, "c_00000.bin) is u16"),
		"%s", err);
	dataset_done(&ds);
}

/* A FIFO nobody writes to: open() without O_NONBLOCK would wait for ever. */
Test(shard, refuses_a_fifo_a_directory_and_a_device_at_once, .timeout = 20)
{
	struct shard_info info;
	char path[128], err[256];

	snprintf(path, sizeof(path), "%s/f.bin", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	cr_assert_eq(probe(path, &info, err), -EINVAL);
	cr_assert(strstr(err, "not a regular file (a FIFO)"), "%s", err);
	cr_assert_eq(probe(dir, &info, err), -EINVAL);
	cr_assert(strstr(err, "a directory"), "%s", err);
	cr_assert_eq(probe("/dev/null", &info, err), -EINVAL);
	cr_assert(strstr(err, "a character device"), "%s", err);
	snprintf(path, sizeof(path), "%s/f.idx", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(path, sizeof(path), "%s/f.bin", dir);
	cr_assert_eq(shard_probe(path, LOADER_FORMAT_MEGATRON, &info, err, 256), -EINVAL);
	cr_assert(strstr(err, "not a regular file"), "%s", err);
}

static long max_rss_kib(void)
{
	struct rusage ru;

	cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
	return ru.ru_maxrss;
}

/* An .idx of idx_bytes, sparse but for its first bytes. */
static void sparse_idx(const char *name, const void *head, size_t head_bytes, uint64_t idx_bytes)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, head, head_bytes, 0), (ssize_t)head_bytes);
	cr_assert_eq(ftruncate(fd, (off_t)idx_bytes), 0);
	close(fd);
}

Test(shard, an_8_gib_sparse_megatron_idx_is_rejected_at_once_in_little_memory, .timeout = 60)
{
	/* 34 + 12 * nr_seqs + 8 * 1 bytes, about 8 GiB. */
	const uint64_t nr_seqs = 715827879, idx_bytes = 34 + 12 * nr_seqs + 8;
	uint8_t head[34 + 4] = "MMIDIDX\0\0";
	uint64_t v = 1, docs = 1, wrong = nr_seqs - 1;
	int32_t huge = 1 << 30;
	struct shard_info info;
	struct timespec t0, t1;
	char path[128], err[256];
	long rss0 = max_rss_kib();
	FILE *f;

	memcpy(head + 9, &v, 8);
	head[17] = 8;
	memcpy(head + 18, &nr_seqs, 8);
	memcpy(head + 26, &docs, 8);
	memcpy(head + 34, &huge, 4);
	snprintf(path, sizeof(path), "%s/m.bin", dir);
	f = fopen(path, "wb");
	fwrite("abcdefgh", 8, 1, f);
	fclose(f);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Zeros: no magic. */
	sparse_idx("m.idx", "", 0, idx_bytes);
	snprintf(path, sizeof(path), "%s/m.idx", dir);
	cr_assert_eq(probe(path, &info, err), -EINVAL);
	cr_assert(strstr(err, "magic"), "%s", err);
	/* A header whose counts do not give the size. */
	memcpy(head + 18, &wrong, 8);
	sparse_idx("m.idx", head, sizeof(head), idx_bytes);
	cr_assert_eq(probe(path, &info, err), -EINVAL);
	cr_assert(strstr(err, "its counts say"), "%s", err);
	/* Counts that fit, and a first sequence longer than the .bin: the rest is not read. */
	memcpy(head + 18, &nr_seqs, 8);
	sparse_idx("m.idx", head, sizeof(head), idx_bytes);
	cr_assert_eq(probe(path, &info, err), -EINVAL);
	cr_assert(strstr(err, "the .bin has 8 bytes"), "%s", err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_lt((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, 1.0);
	cr_assert_lt(max_rss_kib() - rss0, 32 * 1024, "max RSS grew by %ld KiB",
		max_rss_kib() - rss0);
}

Test(shard, megatron_idx_is_checked_a_piece_at_a_time_like_the_whole)
{
	/* More sequences than one read takes, one of them wrong near the end. */
	const uint64_t n = 200000;
	size_t bytes = 34 + 12 * n + 8 * 2;
	uint8_t *idx = calloc(1, bytes);
	uint64_t v = 1, docs = 2, bin = 0;
	struct shard_info info, whole;
	char path[128], err[256], err2[256];
	FILE *f;

	memcpy(idx, "MMIDIDX\0\0", 9);
	memcpy(idx + 9, &v, 8);
	idx[17] = 4;
	memcpy(idx + 18, &n, 8);
	memcpy(idx + 26, &docs, 8);
	for (uint64_t i = 0; i < n; i++) {
		int32_t size = (int32_t)(i % 5);
		uint64_t ptr = bin;

		memcpy(idx + 34 + i * 4, &size, 4);
		memcpy(idx + 34 + n * 4 + i * 8, &ptr, 8);
		bin += (uint64_t)size * 4;
	}
	snprintf(path, sizeof(path), "%s/p.bin", dir);
	f = fopen(path, "wb");
	cr_assert_eq(ftruncate(fileno(f), (off_t)bin), 0);
	fclose(f);
	snprintf(path, sizeof(path), "%s/p.idx", dir);
	f = fopen(path, "wb");
	fwrite(idx, bytes, 1, f);
	fclose(f);
	cr_assert_eq(probe(path, &info, err), 0, "%s", err);
	cr_assert_eq(shard_parse_megatron_idx(idx, bytes, bin, &whole, err2, 256), 0);
	cr_assert_eq(info.nr_tokens, whole.nr_tokens);
	cr_assert_eq(info.nr_seqs, n);
	cr_assert_eq(info.token_bytes, 4);
	idx[34 + n * 4 + (n - 3) * 8] ^= 4;
	f = fopen(path, "wb");
	fwrite(idx, bytes, 1, f);
	fclose(f);
	cr_assert_eq(probe(path, &info, err), -EINVAL);
	cr_assert_eq(shard_parse_megatron_idx(idx, bytes, bin, &whole, err2, 256), -EINVAL);
	cr_assert_str_eq(err, err2);
	cr_assert(strstr(err, "sequence 199997"), "%s", err);
	free(idx);
}

Test(shard, missing_paths_and_wrong_sizes_get_one_line_errors)
{
	struct dataset ds;
	char err[256], path[128];

	snprintf(path, sizeof(path), "%s/nothing_*.bin", dir);
	cr_assert_eq(dataset_open(&ds, path, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "no such"), "%s", err);
	free(write_llmc("w_0.bin", 20240520, 1, 100, 0, 100, 2));
	snprintf(path, sizeof(path), "%s/w_1.bin", dir);
	FILE *f = fopen(path, "wb");
	for (int i = 0; i < 1025; i++)
		fputc(0, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/w_*.bin", dir);
	cr_assert_eq(dataset_open(&ds, path, LOADER_FORMAT_AUTO, 16, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "w_1.bin") && !strchr(err, '\n'), "%s", err);
}
