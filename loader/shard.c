/* Token file formats (llm.c shards, raw tokens, Megatron .bin/.idx) and the sorted list of
 * shards a loader reads: the first step of the loader's data flow. Headers are never trusted:
 * every count is checked against the file size, with 64-bit offsets throughout. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader/loader_i.h"

const char *shard_format_name(enum loader_format format)
{
	switch (format) {
	case LOADER_FORMAT_LLMC:
		return "llm.c";
	case LOADER_FORMAT_RAW_U16:
		return "raw-u16";
	case LOADER_FORMAT_RAW_U32:
		return "raw-u32";
	case LOADER_FORMAT_MEGATRON:
		return "megatron";
	default:
		return "auto";
	}
}

static int32_t le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return (int32_t)v;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

int shard_parse_llmc(const void *hdr, size_t hdr_bytes, uint64_t file_bytes,
	struct shard_info *info, char *err, size_t errlen)
{
	const uint8_t *h = hdr;
	int32_t magic, version, count, vocab;

	memset(info, 0, sizeof(*info));
	if (hdr_bytes < LLMC_HEADER_BYTES || file_bytes < LLMC_HEADER_BYTES) {
		snprintf(err, errlen, "truncated llm.c header: %llu bytes, need %d",
			(unsigned long long)file_bytes, LLMC_HEADER_BYTES);
		return -EINVAL;
	}
	magic = le32(h);
	version = le32(h + 4);
	count = le32(h + 8);
	vocab = le32(h + 12);
	if (magic == LLMC_MAGIC_U16) {
		info->token_bytes = 2;
		if (version != LLMC_VERSION_U16)
			goto bad_version;
	} else if (magic == LLMC_MAGIC_U32) {
		info->token_bytes = 4;
		if (version != LLMC_VERSION_U32)
			goto bad_version;
	} else {
		snprintf(err, errlen, "bad magic %d (want %d or %d): not an llm.c shard", magic,
			LLMC_MAGIC_U16, LLMC_MAGIC_U32);
		return -EINVAL;
	}
	/* header[2] is an int32, so 2^31 - 1 tokens at most; a negative count is corruption. */
	if (count < 0) {
		snprintf(err, errlen, "bad token count %d in llm.c header", count);
		return -EINVAL;
	}
	if ((uint64_t)LLMC_HEADER_BYTES + (uint64_t)count * info->token_bytes != file_bytes) {
		snprintf(err, errlen,
			"llm.c header says %d tokens of %u bytes (%llu bytes) but the file has %llu",
			count, info->token_bytes,
			(unsigned long long)(LLMC_HEADER_BYTES +
					     (uint64_t)count * info->token_bytes),
			(unsigned long long)file_bytes);
		return -EINVAL;
	}
	info->format = LOADER_FORMAT_LLMC;
	info->version = (uint32_t)version;
	info->data_offset = LLMC_HEADER_BYTES;
	info->nr_tokens = (uint64_t)count;
	info->vocab = vocab > 0 ? (uint32_t)vocab : 0;
	return 0;
bad_version:
	snprintf(err, errlen, "llm.c magic %d with unsupported version %d", magic, version);
	return -EINVAL;
}

static int megatron_short_bin(uint64_t sum, uint32_t token_bytes, uint64_t bin_bytes, char *err,
	size_t errlen)
{
	snprintf(err, errlen,
		"Megatron .idx declares %s%llu tokens (%llu bytes) but the .bin "
		"has %llu bytes",
		sum * token_bytes > bin_bytes ? "at least " : "", (unsigned long long)sum,
		(unsigned long long)(sum * token_bytes), (unsigned long long)bin_bytes);
	return -EINVAL;
}

int shard_parse_megatron_header(const void *hdr, size_t hdr_bytes, uint64_t idx_bytes,
	struct shard_info *info, char *err, size_t errlen)
{
	const uint8_t *p = hdr;
	uint64_t version, nr_seqs, nr_docs, want;
	uint8_t dtype;

	memset(info, 0, sizeof(*info));
	if (hdr_bytes < MEGATRON_HDR_BYTES || idx_bytes < MEGATRON_HDR_BYTES) {
		snprintf(err, errlen, "truncated Megatron .idx: %llu bytes, header needs %d",
			(unsigned long long)(idx_bytes < hdr_bytes ? idx_bytes : hdr_bytes),
			MEGATRON_HDR_BYTES);
		return -EINVAL;
	}
	if (memcmp(p, MEGATRON_MAGIC, 9) != 0) {
		snprintf(err, errlen, "bad magic: not a Megatron .idx (want MMIDIDX)");
		return -EINVAL;
	}
	version = le64(p + 9);
	dtype = p[17];
	nr_seqs = le64(p + 18);
	nr_docs = le64(p + 26);
	if (version != 1) {
		snprintf(err, errlen, "Megatron .idx version %llu unsupported (want 1)",
			(unsigned long long)version);
		return -EINVAL;
	}
	switch (dtype) {
	case 3: /* int16 */
	case 8: /* uint16 */
		info->token_bytes = 2;
		break;
	case 4: /* int32 */
		info->token_bytes = 4;
		break;
	default:
		snprintf(err, errlen, "Megatron dtype code %u unsupported (want 3, 4 or 8)", dtype);
		return -EINVAL;
	}
	/* Bound the counts by the file before multiplying: a corrupt count cannot overflow. */
	if (nr_seqs > idx_bytes / 12 || nr_docs > idx_bytes / 8) {
		snprintf(err, errlen,
			"Megatron .idx counts (%llu sequences, %llu documents) exceed "
			"its %llu bytes",
			(unsigned long long)nr_seqs, (unsigned long long)nr_docs,
			(unsigned long long)idx_bytes);
		return -EINVAL;
	}
	want = MEGATRON_HDR_BYTES + nr_seqs * 12 + nr_docs * 8;
	if (want != idx_bytes) {
		snprintf(err, errlen, "Megatron .idx is %llu bytes, its counts say %llu",
			(unsigned long long)idx_bytes, (unsigned long long)want);
		return -EINVAL;
	}
	info->format = LOADER_FORMAT_MEGATRON;
	info->version = 1;
	info->nr_seqs = nr_seqs;
	return 0;
}

int shard_check_megatron_seqs(const void *sizes, const void *ptrs, uint64_t first, uint64_t nr,
	uint32_t token_bytes, uint64_t bin_bytes, uint64_t *sum, char *err, size_t errlen)
{
	/* sizes (int32) then pointers (int64), neither aligned: memcpy each. */
	for (uint64_t k = 0; k < nr; k++) {
		int32_t size = le32((const uint8_t *)sizes + k * 4);
		uint64_t ptr = le64((const uint8_t *)ptrs + k * 8);

		if (size < 0 || ptr != *sum * token_bytes) {
			snprintf(err, errlen,
				"Megatron .idx sequence %llu: size %d at byte %llu, "
				"expected byte %llu",
				(unsigned long long)(first + k), size, (unsigned long long)ptr,
				(unsigned long long)(*sum * token_bytes));
			return -EINVAL;
		}
		*sum += (uint64_t)size;
		/* Stop at the first sequence past the .bin: the rest need not be read. With at
		 * most 2^40 / 12 sequences of under 2^31 tokens, sum * 4 stays below 2^64. */
		if (*sum * token_bytes > bin_bytes)
			return megatron_short_bin(*sum, token_bytes, bin_bytes, err, errlen);
	}
	return 0;
}

int shard_parse_megatron_idx(const void *idx, size_t idx_bytes, uint64_t bin_bytes,
	struct shard_info *info, char *err, size_t errlen)
{
	const uint8_t *p = idx;
	uint64_t sum = 0;
	int ret;

	ret = shard_parse_megatron_header(idx, idx_bytes, idx_bytes, info, err, errlen);
	if (ret < 0)
		return ret;
	ret = shard_check_megatron_seqs(p + MEGATRON_HDR_BYTES,
		p + MEGATRON_HDR_BYTES + info->nr_seqs * 4, 0, info->nr_seqs, info->token_bytes,
		bin_bytes, &sum, err, errlen);
	if (ret == 0 && sum * info->token_bytes != bin_bytes)
		ret = megatron_short_bin(sum, info->token_bytes, bin_bytes, err, errlen);
	if (ret < 0) {
		memset(info, 0, sizeof(*info));
		return ret;
	}
	info->nr_tokens = sum;
	return 0;
}

static const char *file_kind(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	return "a special file";
}

int shard_open_file(const char *path, int flags, uint64_t *file_bytes, char *err, size_t errlen)
{
	struct stat sb;
	int fd, fl, ret;

	/* Special files are refused before open: opening a FIFO waits for a writer, and
	 * opening a device may do something. O_NONBLOCK covers a file swapped for a FIFO after
	 * the stat; it means nothing to a regular file and is cleared anyway. */
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "not a regular file (%s)", file_kind(sb.st_mode));
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | flags);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open: %s", strerror(errno));
		return ret;
	}
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat: %s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = -EINVAL;
		snprintf(err, errlen, "not a regular file (%s)", file_kind(sb.st_mode));
		goto fail;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = -errno;
		snprintf(err, errlen, "fcntl: %s", strerror(errno));
		goto fail;
	}
	if (file_bytes)
		*file_bytes = (uint64_t)sb.st_size;
	return fd;
fail:
	close(fd);
	return ret;
}

/* Up to want bytes at off; fewer only at the end of the file. */
static int read_at(int fd, void *buf, size_t want, uint64_t off, size_t *got, char *err,
	size_t errlen)
{
	size_t n = 0;

	while (n < want) {
		ssize_t r = pread(fd, (char *)buf + n, want - n, (off_t)(off + n));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int ret = -errno;

			snprintf(err, errlen, "read failed: %s", strerror(errno));
			return ret;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*got = n;
	return 0;
}

static int read_all(const char *path, void *buf, size_t want, size_t *got, uint64_t *file_bytes,
	char *err, size_t errlen)
{
	int fd, ret;

	fd = shard_open_file(path, 0, file_bytes, err, errlen);
	if (fd < 0)
		return fd;
	ret = read_at(fd, buf, want, 0, got, err, errlen);
	close(fd);
	return ret;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "x.bin" <-> "x.idx" */
static char *swap_suffix(const char *path, const char *suffix)
{
	size_t n = strlen(path);
	char *p = malloc(n + 1);

	if (!p)
		return NULL;
	memcpy(p, path, n + 1);
	memcpy(p + n - 4, suffix, 4);
	return p;
}

/* Sequences checked per read of an .idx: 768 KiB of sizes and pointers. */
#define MEGATRON_SEQS_PER_READ 65536u

/* Checks an open .idx of idx_bytes against its .bin of bin_bytes: the header first (its
 * counts must give the file's size exactly), then the sizes and pointers a bounded piece at a
 * time, so that no size in a file, true or not, decides how much is read or allocated before
 * it has been checked. */
static int check_megatron_idx(int fd, uint64_t idx_bytes, uint64_t bin_bytes,
	struct shard_info *info, char *err, size_t errlen)
{
	uint8_t hdr[MEGATRON_HDR_BYTES];
	uint8_t *sizes = NULL, *ptrs = NULL;
	uint64_t sum = 0;
	size_t got = 0;
	int ret;

	/* An .idx needs 12 bytes per sequence; 2^40 bytes is far beyond any real one, and the
	 * bound keeps the token sums below in 64 bits. */
	if (idx_bytes > (1ull << 40)) {
		snprintf(err, errlen, "Megatron .idx of %llu bytes is not plausible",
			(unsigned long long)idx_bytes);
		return -EINVAL;
	}
	ret = read_at(fd, hdr, sizeof(hdr), 0, &got, err, errlen);
	if (ret < 0)
		return ret;
	ret = shard_parse_megatron_header(hdr, got, idx_bytes, info, err, errlen);
	if (ret < 0)
		return ret;
	ret = -ENOMEM;
	sizes = malloc((size_t)MEGATRON_SEQS_PER_READ * 4);
	ptrs = malloc((size_t)MEGATRON_SEQS_PER_READ * 8);
	if (!sizes || !ptrs) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < info->nr_seqs; i += MEGATRON_SEQS_PER_READ) {
		uint64_t n = info->nr_seqs - i < MEGATRON_SEQS_PER_READ ? info->nr_seqs - i
									: MEGATRON_SEQS_PER_READ;
		size_t got_s = 0, got_p = 0;

		ret = read_at(fd, sizes, n * 4, MEGATRON_HDR_BYTES + i * 4, &got_s, err, errlen);
		if (ret == 0)
			ret = read_at(fd, ptrs, n * 8,
				MEGATRON_HDR_BYTES + info->nr_seqs * 4 + i * 8, &got_p, err,
				errlen);
		if (ret < 0)
			goto out;
		if (got_s < n * 4 || got_p < n * 8) {
			ret = -EINVAL;
			snprintf(err, errlen, "Megatron .idx shrank while being read");
			goto out;
		}
		ret = shard_check_megatron_seqs(sizes, ptrs, i, n, info->token_bytes, bin_bytes,
			&sum, err, errlen);
		if (ret < 0)
			goto out;
	}
	ret = 0;
	if (sum * info->token_bytes != bin_bytes)
		ret = megatron_short_bin(sum, info->token_bytes, bin_bytes, err, errlen);
	info->nr_tokens = sum;
out:
	free(sizes);
	free(ptrs);
	return ret;
}

static int probe_megatron(const char *path, struct shard_info *info, char *err, size_t errlen)
{
	char *idx_path = NULL, *bin_path = NULL;
	uint64_t idx_bytes = 0, bin_bytes = 0;
	struct stat sb;
	char why[200];
	int ret, fd = -1;

	if (has_suffix(path, ".idx")) {
		idx_path = strdup(path);
		bin_path = swap_suffix(path, ".bin");
	} else if (has_suffix(path, ".bin")) {
		bin_path = strdup(path);
		idx_path = swap_suffix(path, ".idx");
	} else {
		snprintf(err, errlen, "a Megatron dataset is named NAME.bin with NAME.idx");
		return -EINVAL;
	}
	ret = -ENOMEM;
	if (!idx_path || !bin_path) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	/* The .bin is only sized here; opening it waits until it is read. */
	if (stat(bin_path, &sb) < 0) {
		ret = -errno;
		snprintf(err, errlen, "Megatron pair %s: %s", bin_path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = -EINVAL;
		snprintf(err, errlen, "Megatron pair %s: not a regular file (%s)", bin_path,
			file_kind(sb.st_mode));
		goto out;
	}
	bin_bytes = (uint64_t)sb.st_size;
	fd = shard_open_file(idx_path, 0, &idx_bytes, why, sizeof(why));
	if (fd < 0) {
		ret = fd;
		snprintf(err, errlen, "Megatron pair %s: %s", idx_path, why);
		goto out;
	}
	ret = check_megatron_idx(fd, idx_bytes, bin_bytes, info, why, sizeof(why));
	/* Probed through its .bin, the reason names the .idx it is about. */
	if (ret < 0 && has_suffix(path, ".idx"))
		snprintf(err, errlen, "%s", why);
	else if (ret < 0)
		snprintf(err, errlen, "Megatron pair %s: %s", idx_path, why);
out:
	if (fd >= 0)
		close(fd);
	free(idx_path);
	free(bin_path);
	return ret;
}

int shard_probe(const char *path, enum loader_format format, struct shard_info *info, char *err,
	size_t errlen)
{
	uint8_t hdr[LLMC_HEADER_BYTES];
	uint64_t file_bytes = 0;
	size_t got = 0;
	int ret;

	memset(info, 0, sizeof(*info));
	if (format == LOADER_FORMAT_MEGATRON || has_suffix(path, ".idx"))
		return probe_megatron(path, info, err, errlen);
	ret = read_all(path, hdr, sizeof(hdr), &got, &file_bytes, err, errlen);
	if (ret < 0)
		return ret;
	if (format == LOADER_FORMAT_RAW_U16 || format == LOADER_FORMAT_RAW_U32) {
		info->format = format;
		info->token_bytes = format == LOADER_FORMAT_RAW_U16 ? 2 : 4;
		if (file_bytes % info->token_bytes) {
			snprintf(err, errlen, "size %llu is not a multiple of %u-byte tokens",
				(unsigned long long)file_bytes, info->token_bytes);
			return -EINVAL;
		}
		info->nr_tokens = file_bytes / info->token_bytes;
		return 0;
	}
	if (format == LOADER_FORMAT_AUTO && got >= 9 && memcmp(hdr, MEGATRON_MAGIC, 9) == 0) {
		snprintf(err, errlen, "a Megatron .idx; name it NAME.idx next to NAME.bin");
		return -EINVAL;
	}
	if (format == LOADER_FORMAT_AUTO && has_suffix(path, ".bin") && got >= 4) {
		/* NAME.bin with a NAME.idx beside it and no llm.c magic: Megatron. */
		int32_t magic = le32(hdr);
		char *idx = swap_suffix(path, ".idx");
		struct stat sb;
		bool pair = idx && stat(idx, &sb) == 0;

		free(idx);
		if (pair && magic != LLMC_MAGIC_U16 && magic != LLMC_MAGIC_U32)
			return probe_megatron(path, info, err, errlen);
	}
	return shard_parse_llmc(hdr, got, file_bytes, info, err, errlen);
}

/* ---- the dataset: a sorted list of shards ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct name_list {
	char **v;
	size_t n, cap;
};

static int names_add(struct name_list *l, const char *s)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n] = strdup(s);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static void names_free(struct name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* Files of a directory (not hidden), or matches of a glob, or the one file. */
static int list_paths(const char *paths, struct name_list *out, char *err, size_t errlen)
{
	struct stat sb;
	int ret = 0;

	if (stat(paths, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		DIR *d = opendir(paths);
		struct dirent *e;

		if (!d) {
			snprintf(err, errlen, "%s: %s", paths, strerror(errno));
			return -errno;
		}
		while ((e = readdir(d)) != NULL) {
			char *p;

			if (e->d_name[0] == '.')
				continue;
			if (asprintf(&p, "%s/%s", paths, e->d_name) < 0) {
				ret = -ENOMEM;
				break;
			}
			if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
				ret = names_add(out, p);
			free(p);
			if (ret < 0)
				break;
		}
		closedir(d);
		return ret;
	}
	if (stat(paths, &sb) == 0)
		return names_add(out, paths);
	glob_t g;
	int gr = glob(paths, GLOB_ERR, NULL, &g);

	if (gr == GLOB_NOMATCH) {
		snprintf(err, errlen, "%s: no such file, directory or glob match", paths);
		return -ENOENT;
	}
	if (gr != 0) {
		snprintf(err, errlen, "%s: glob failed", paths);
		return -EIO;
	}
	for (size_t i = 0; i < g.gl_pathc && ret == 0; i++)
		if (stat(g.gl_pathv[i], &sb) == 0 && S_ISREG(sb.st_mode))
			ret = names_add(out, g.gl_pathv[i]);
	globfree(&g);
	return ret;
}

int dataset_open(struct dataset *ds, const char *paths, enum loader_format format, uint32_t seq_len,
	char *err, size_t errlen)
{
	struct name_list names = { 0 };
	struct shard_info first;
	char why[256];
	uint64_t total = 0;
	int ret;

	memset(ds, 0, sizeof(*ds));
	ds->seq_len = seq_len;
	ds->max_open = dataset_max_open();
	ds->lru_head = ds->lru_tail = DATASET_NONE;
	if (!paths || !*paths) {
		snprintf(err, errlen, "no data path given");
		return -EINVAL;
	}
	ret = list_paths(paths, &names, err, errlen);
	if (ret < 0)
		goto out;
	qsort(names.v, names.n, sizeof(*names.v), cmp_str);
	ds->shards = calloc(names.n ? names.n : 1, sizeof(*ds->shards));
	ret = -ENOMEM;
	if (!ds->shards)
		goto out;
	/* The first file decides format and width; the others are checked against it by
	 * dataset_check_all (or when first read). */
	for (size_t i = 0; i < names.n; i++) {
		const char *p = names.v[i];
		struct shard *sh;
		struct stat sb;

		if (has_suffix(p, ".idx")) {
			/* x.idx is listed through its x.bin (skip it when x.bin is also listed). */
			char *bin = swap_suffix(p, ".bin");
			bool listed =
				bin && bsearch(&bin, names.v, names.n, sizeof(char *), cmp_str);

			free(bin);
			if (listed)
				continue;
		}
		if (ds->nr_shards == 0) {
			ret = shard_probe(p, format, &first, why, sizeof(why));
			if (ret < 0) {
				snprintf(err, errlen, "%s: %s", p, why);
				goto out;
			}
			ds->format = first.format;
			ds->token_bytes = first.token_bytes;
			ds->data_offset = first.data_offset;
			ds->vocab = first.vocab                          ? first.vocab
				    : first.format == LOADER_FORMAT_LLMC ? LLMC_VOCAB
									 : 0;
			ds->declared_vocab = first.vocab;
		}
		sh = &ds->shards[ds->nr_shards];
		sh->fd = -1;
		sh->lru_prev = sh->lru_next = DATASET_NONE;
		if (ds->format == LOADER_FORMAT_MEGATRON) {
			sh->path = has_suffix(p, ".idx") ? swap_suffix(p, ".bin") : strdup(p);
			sh->idx_path = sh->path ? swap_suffix(sh->path, ".idx") : NULL;
			if (!sh->path || !sh->idx_path)
				goto out;
		} else {
			sh->path = strdup(p);
			if (!sh->path)
				goto out;
		}
		ds->nr_shards++;
		if (stat(sh->path, &sb) < 0) {
			ret = -errno;
			snprintf(err, errlen, "%s: %s", sh->path, strerror(errno));
			goto out;
		}
		sh->file_bytes = (uint64_t)sb.st_size;
		if (sh->file_bytes < ds->data_offset ||
			(sh->file_bytes - ds->data_offset) % ds->token_bytes) {
			ret = -EINVAL;
			snprintf(err, errlen, "%s: size %llu does not fit %s with %u-byte tokens",
				sh->path, (unsigned long long)sh->file_bytes,
				shard_format_name(ds->format), ds->token_bytes);
			goto out;
		}
		sh->nr_tokens = (sh->file_bytes - ds->data_offset) / ds->token_bytes;
		sh->nr_samples = sh->nr_tokens > seq_len ? (sh->nr_tokens - 1) / seq_len : 0;
		sh->first_sample = total;
		total += sh->nr_samples;
		if (ds->nr_shards == 1)
			sh->checked = true; /* probed above */
	}
	ret = -ENOENT;
	if (ds->nr_shards == 0) {
		snprintf(err, errlen, "%s: no token files", paths);
		goto out;
	}
	ds->nr_samples = total;
	ret = 0;
out:
	names_free(&names);
	if (ret < 0) {
		if (ret == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		dataset_done(ds);
	}
	return ret;
}

void dataset_done(struct dataset *ds)
{
	for (uint32_t i = 0; ds->shards && i < ds->nr_shards; i++) {
		free(ds->shards[i].path);
		free(ds->shards[i].idx_path);
		if (ds->shards[i].fd >= 0)
			close(ds->shards[i].fd);
	}
	free(ds->shards);
	memset(ds, 0, sizeof(*ds));
}

uint32_t dataset_find(const struct dataset *ds, uint64_t g)
{
	uint32_t lo = 0, hi = ds->nr_shards - 1;

	/* Last shard with first_sample <= g and samples in it. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;

		if (ds->shards[mid].first_sample <= g)
			lo = mid;
		else
			hi = mid - 1;
	}
	while (ds->shards[lo].nr_samples == 0 && lo > 0)
		lo--;
	return lo;
}

uint32_t dataset_max_open(void)
{
	struct rlimit rl;
	uint64_t n = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		n = rl.rlim_cur;
	n /= 8;
	if (n < DATASET_MIN_OPEN)
		n = DATASET_MIN_OPEN;
	if (n > DATASET_MAX_OPEN)
		n = DATASET_MAX_OPEN;
	return (uint32_t)n;
}

static void lru_remove(struct dataset *ds, uint32_t s)
{
	struct shard *sh = &ds->shards[s];

	if (sh->lru_prev != DATASET_NONE)
		ds->shards[sh->lru_prev].lru_next = sh->lru_next;
	else
		ds->lru_head = sh->lru_next;
	if (sh->lru_next != DATASET_NONE)
		ds->shards[sh->lru_next].lru_prev = sh->lru_prev;
	else
		ds->lru_tail = sh->lru_prev;
	sh->lru_prev = sh->lru_next = DATASET_NONE;
}

static void lru_append(struct dataset *ds, uint32_t s)
{
	struct shard *sh = &ds->shards[s];

	sh->lru_prev = ds->lru_tail;
	sh->lru_next = DATASET_NONE;
	if (ds->lru_tail != DATASET_NONE)
		ds->shards[ds->lru_tail].lru_next = s;
	else
		ds->lru_head = s;
	ds->lru_tail = s;
}

static bool lru_holds(const struct dataset *ds, uint32_t s)
{
	const struct shard *sh = &ds->shards[s];

	return sh->fd >= 0 && sh->users == 0;
}

/* Closes the least recently used shard that nobody pins, if any. */
static void close_lru(struct dataset *ds)
{
	uint32_t s = ds->lru_head;

	if (s == DATASET_NONE)
		return;
	lru_remove(ds, s);
	close(ds->shards[s].fd);
	ds->shards[s].fd = -1;
	ds->nr_open--;
}

/* Whether info (a probe of shard s) agrees with the dataset: the first shard's format and
 * token width, and the token count its size gives. */
static int shard_agrees(const struct dataset *ds, uint32_t s, const struct shard_info *info,
	char *err, size_t errlen)
{
	const struct shard *sh = &ds->shards[s];

	if (info->format != ds->format) {
		snprintf(err, errlen, "%s: format %s, the first shard's (%s) is %s", sh->path,
			shard_format_name(info->format), ds->shards[0].path,
			shard_format_name(ds->format));
		return -EINVAL;
	}
	if (info->token_bytes != ds->token_bytes) {
		snprintf(err, errlen, "%s: token width u%u, the first shard's (%s) is u%u",
			sh->path, info->token_bytes * 8, ds->shards[0].path, ds->token_bytes * 8);
		return -EINVAL;
	}
	if (info->nr_tokens != sh->nr_tokens) {
		snprintf(err, errlen, "%s: the header says %llu tokens, the size %llu", sh->path,
			(unsigned long long)info->nr_tokens, (unsigned long long)sh->nr_tokens);
		return -EINVAL;
	}
	return 0;
}

static int shard_check(const struct dataset *ds, uint32_t s, char *err, size_t errlen)
{
	const struct shard *sh = &ds->shards[s];
	struct shard_info info;
	char why[256];
	int ret;

	ret = shard_probe(sh->idx_path ? sh->idx_path : sh->path, ds->format, &info, why,
		sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", sh->idx_path ? sh->idx_path : sh->path, why);
		return ret;
	}
	return shard_agrees(ds, s, &info, err, errlen);
}

/* dataset_check_all's threads share this: each takes the next shard; the failure of the
 * lowest index is kept. */
struct check_job {
	struct dataset *ds;
	_Atomic uint32_t next;
	_Atomic bool failed;
	pthread_mutex_t lock;
	uint32_t bad;  /* lock: the lowest failing shard, or DATASET_NONE */
	int ret;       /* lock */
	char err[512]; /* lock */
};

static void *check_worker(void *arg)
{
	struct check_job *job = arg;
	struct dataset *ds = job->ds;
	char err[512];
	uint32_t s;

	while (!atomic_load(&job->failed) &&
		(s = atomic_fetch_add(&job->next, 1)) < ds->nr_shards) {
		int ret;

		if (ds->shards[s].checked)
			continue;
		ret = shard_check(ds, s, err, sizeof(err));
		if (ret == 0) {
			ds->shards[s].checked = true; /* this thread's shard alone */
			continue;
		}
		pthread_mutex_lock(&job->lock);
		if (s < job->bad) {
			job->bad = s;
			job->ret = ret;
			snprintf(job->err, sizeof(job->err), "%s", err);
		}
		pthread_mutex_unlock(&job->lock);
		atomic_store(&job->failed, true);
	}
	return NULL;
}

int dataset_check_all(struct dataset *ds, uint32_t nr_threads, char *err, size_t errlen)
{
	struct check_job job = { .ds = ds, .bad = DATASET_NONE };
	pthread_t threads[16];
	uint32_t started = 0;

	/* A thread per 256 shards, up to nr_threads: on a mount each header is a round trip
	 * (a fetch when cold), which threads overlap; a few shards need none. */
	if (nr_threads > 16)
		nr_threads = 16;
	if (nr_threads > ds->nr_shards / 256)
		nr_threads = ds->nr_shards / 256;
	pthread_mutex_init(&job.lock, NULL);
	for (uint32_t i = 0; i < nr_threads; i++) {
		if (pthread_create(&threads[started], NULL, check_worker, &job) != 0)
			break;
		started++;
	}
	check_worker(&job);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	pthread_mutex_destroy(&job.lock);
	if (job.bad == DATASET_NONE)
		return 0;
	snprintf(err, errlen, "%s", job.err);
	return job.ret;
}

int dataset_prepare(struct dataset *ds, uint32_t s, char *err, size_t errlen)
{
	struct shard *sh = &ds->shards[s];
	char why[256];
	int ret;

	if (!sh->checked) {
		ret = shard_check(ds, s, err, errlen);
		if (ret < 0)
			return ret;
		sh->checked = true;
	}
	if (sh->fd >= 0) {
		if (sh->users == 0) { /* now the most recently used */
			lru_remove(ds, s);
			lru_append(ds, s);
		}
		return 0;
	}
	while (ds->nr_open >= ds->max_open && ds->lru_head != DATASET_NONE)
		close_lru(ds);
	ret = shard_open_file(sh->path, 0, NULL, why, sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", sh->path, why);
		return ret;
	}
	sh->fd = ret;
	ds->nr_open++;
	if (sh->users == 0)
		lru_append(ds, s);
	return 0;
}

int dataset_pin(struct dataset *ds, uint32_t s, char *err, size_t errlen)
{
	int ret = dataset_prepare(ds, s, err, errlen);

	if (ret < 0)
		return ret;
	if (lru_holds(ds, s))
		lru_remove(ds, s);
	ds->shards[s].users++;
	return 0;
}

void dataset_unpin(struct dataset *ds, uint32_t s)
{
	if (--ds->shards[s].users == 0 && ds->shards[s].fd >= 0)
		lru_append(ds, s);
}
