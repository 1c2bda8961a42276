/* Token file formats (llm.c shards, raw tokens, Megatron .bin/.idx) and the sorted list of
 * shards a loader reads: the first step of the loader's data flow. Headers are never trusted:
 * every count is checked against the file size, with 64-bit offsets throughout. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
			(unsigned long long)(LLMC_HEADER_BYTES + (uint64_t)count * info->token_bytes),
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

int shard_parse_megatron_idx(const void *idx, size_t idx_bytes, uint64_t bin_bytes,
	struct shard_info *info, char *err, size_t errlen)
{
	const uint8_t *p = idx;
	uint64_t version, nr_seqs, nr_docs, want, sum = 0, i;
	uint8_t dtype;

	memset(info, 0, sizeof(*info));
	if (idx_bytes < MEGATRON_HDR_BYTES) {
		snprintf(err, errlen, "truncated Megatron .idx: %zu bytes, header needs %d",
			idx_bytes, MEGATRON_HDR_BYTES);
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
		snprintf(err, errlen, "Megatron .idx counts (%llu sequences, %llu documents) exceed "
			"its %zu bytes", (unsigned long long)nr_seqs, (unsigned long long)nr_docs,
			idx_bytes);
		return -EINVAL;
	}
	want = MEGATRON_HDR_BYTES + nr_seqs * 12 + nr_docs * 8;
	if (want != idx_bytes) {
		snprintf(err, errlen, "Megatron .idx is %zu bytes, its counts say %llu", idx_bytes,
			(unsigned long long)want);
		return -EINVAL;
	}
	/* sizes (int32) then pointers (int64), neither aligned: memcpy each. */
	for (i = 0; i < nr_seqs; i++) {
		int32_t size = le32(p + MEGATRON_HDR_BYTES + i * 4);
		uint64_t ptr = le64(p + MEGATRON_HDR_BYTES + nr_seqs * 4 + i * 8);

		if (size < 0 || ptr != sum * info->token_bytes) {
			snprintf(err, errlen, "Megatron .idx sequence %llu: size %d at byte %llu, "
				"expected byte %llu", (unsigned long long)i, size,
				(unsigned long long)ptr, (unsigned long long)(sum * info->token_bytes));
			return -EINVAL;
		}
		sum += (uint64_t)size;
	}
	if (sum * info->token_bytes != bin_bytes) {
		snprintf(err, errlen, "Megatron .idx declares %llu tokens (%llu bytes) but the .bin "
			"has %llu bytes", (unsigned long long)sum,
			(unsigned long long)(sum * info->token_bytes), (unsigned long long)bin_bytes);
		return -EINVAL;
	}
	info->format = LOADER_FORMAT_MEGATRON;
	info->version = 1;
	info->nr_tokens = sum;
	info->nr_seqs = nr_seqs;
	return 0;
}

static int read_all(const char *path, void *buf, size_t want, size_t *got, uint64_t *file_bytes,
	char *err, size_t errlen)
{
	struct stat sb;
	size_t n = 0;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = -EINVAL;
		snprintf(err, errlen, "not a regular file");
		goto out;
	}
	*file_bytes = (uint64_t)sb.st_size;
	while (n < want) {
		ssize_t r = pread(fd, (char *)buf + n, want - n, (off_t)n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			snprintf(err, errlen, "read failed: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*got = n;
out:
	if (fd >= 0)
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

static int probe_megatron(const char *path, struct shard_info *info, char *err, size_t errlen)
{
	char *idx_path = NULL, *bin_path = NULL;
	struct stat sb;
	void *buf = NULL;
	size_t got = 0;
	uint64_t idx_bytes = 0;
	int ret;

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
	if (!idx_path || !bin_path)
		goto out;
	if (stat(idx_path, &sb) < 0 || stat(bin_path, &sb) < 0) {
		ret = -errno;
		snprintf(err, errlen, "Megatron pair %s / .idx: %s", bin_path, strerror(errno));
		goto out;
	}
	ret = -EINVAL;
	/* An .idx needs 12 bytes per sequence; 2^40 sequences is far beyond any real one. */
	if (stat(idx_path, &sb) < 0 || (uint64_t)sb.st_size > (1ull << 40)) {
		snprintf(err, errlen, "Megatron .idx of %lld bytes is not plausible",
			(long long)sb.st_size);
		goto out;
	}
	idx_bytes = (uint64_t)sb.st_size;
	ret = -ENOMEM;
	buf = malloc(idx_bytes ? idx_bytes : 1);
	if (!buf)
		goto out;
	ret = read_all(idx_path, buf, idx_bytes, &got, &idx_bytes, err, errlen);
	if (ret < 0)
		goto out;
	if (stat(bin_path, &sb) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", bin_path, strerror(errno));
		goto out;
	}
	ret = shard_parse_megatron_idx(buf, got, (uint64_t)sb.st_size, info, err, errlen);
out:
	free(buf);
	free(idx_path);
	free(bin_path);
	return ret;
}

int shard_probe(const char *path, enum loader_format format, struct shard_info *info,
	char *err, size_t errlen)
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

int dataset_open(struct dataset *ds, const char *paths, enum loader_format format,
	uint32_t seq_len, char *err, size_t errlen)
{
	struct name_list names = { 0 };
	struct shard_info first;
	char why[256];
	uint64_t total = 0;
	int ret;

	memset(ds, 0, sizeof(*ds));
	ds->seq_len = seq_len;
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
	/* The first file decides format and width; later ones are checked when first read. */
	for (size_t i = 0; i < names.n; i++) {
		const char *p = names.v[i];
		struct shard *sh;
		struct stat sb;

		if (has_suffix(p, ".idx")) {
			/* x.idx is listed through its x.bin (skip it when x.bin is also listed). */
			char *bin = swap_suffix(p, ".bin");
			bool listed = bin && bsearch(&bin, names.v, names.n, sizeof(char *), cmp_str);

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
			ds->vocab = first.vocab ? first.vocab :
				first.format == LOADER_FORMAT_LLMC ? LLMC_VOCAB : 0;
			ds->declared_vocab = first.vocab;
		}
		sh = &ds->shards[ds->nr_shards];
		sh->fd = -1;
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

/* Keeps at most DATASET_MAX_OPEN shards open: ten thousand shards must not need 10k fds. A
 * shard with reads in flight (users) keeps its fd; when all are busy, the cap is exceeded. */
static void close_one(struct dataset *ds, uint32_t keep)
{
	for (uint32_t n = 0; n < ds->nr_shards; n++) {
		uint32_t i = ds->clock++ % ds->nr_shards;

		if (i != keep && ds->shards[i].fd >= 0 && ds->shards[i].users == 0) {
			close(ds->shards[i].fd);
			ds->shards[i].fd = -1;
			ds->nr_open--;
			return;
		}
	}
}

int dataset_prepare(struct dataset *ds, uint32_t s, char *err, size_t errlen)
{
	struct shard *sh = &ds->shards[s];
	struct shard_info info;
	char why[256];
	int ret;

	if (!sh->checked) {
		ret = shard_probe(sh->idx_path ? sh->idx_path : sh->path, ds->format, &info, why,
			sizeof(why));
		if (ret < 0) {
			snprintf(err, errlen, "%s: %s", sh->path, why);
			return ret;
		}
		if (info.token_bytes != ds->token_bytes || info.nr_tokens != sh->nr_tokens) {
			snprintf(err, errlen, "%s: %u-byte tokens, %llu of them; the dataset has "
				"%u-byte tokens and the size implies %llu", sh->path,
				info.token_bytes, (unsigned long long)info.nr_tokens,
				ds->token_bytes, (unsigned long long)sh->nr_tokens);
			return -EINVAL;
		}
		sh->checked = true;
	}
	if (sh->fd >= 0)
		return 0;
	if (ds->nr_open >= DATASET_MAX_OPEN)
		close_one(ds, s);
	sh->fd = open(sh->path, O_RDONLY | O_CLOEXEC);
	if (sh->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", sh->path, strerror(errno));
		return ret;
	}
	ds->nr_open++;
	return 0;
}
