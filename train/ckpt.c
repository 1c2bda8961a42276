/* train/: llm.c model files and ferry state files, written atomically, read with every size
 * and field checked first, so a truncated or foreign file is one error line, never a crash. */
#include "train/ckpt.h"
#include "train/guard.h"
#include "train/zero.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define STATE_MAGIC 0x54535246u /* "FRST" */
/* Version 2 added the loader's order settings (two u32) after the settings length; version 1
 * files are still read, with those settings 0 (not recorded). */
/* 3: loader_position is the global position in the epoch's order (samples), not a rank's batch
 * count; the order is the same for every world size from then on. */
#define STATE_VERSION         3u
#define STATE_V1_HEADER_BYTES (4 + 4 + 8 * 5 + 4)
#define STATE_HEADER_BYTES    (STATE_V1_HEADER_BYTES + 4 + 4)

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

void ckpt_state_done(struct ckpt_state *st)
{
	if (!st)
		return;
	free(st->settings);
	st->settings = NULL;
}

/* 64-bit FNV-1a: catches truncation and torn writes of the state file */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL

struct piece {
	const void *data;
	size_t bytes;
};

static int write_all(int fd, const void *data, size_t bytes)
{
	const char *p = data;
	while (bytes > 0) {
		ssize_t n = write(fd, p, bytes > (1u << 30) ? (1u << 30) : bytes);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		bytes -= (size_t)n;
	}
	return 0;
}

static void dir_of(const char *path, char *dir, size_t len)
{
	snprintf(dir, len, "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, len, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
}

/* temp file in the same directory, fsync, rename over path, fsync the directory: a reader sees
 * the old file or the whole new one, even after a crash */
static int write_atomic(const char *path, const struct piece *pieces, int nr_pieces, char *err,
	size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
	int rc = 0;
	for (int i = 0; i < nr_pieces && rc == 0; i++)
		rc = write_all(fd, pieces[i].data, pieces[i].bytes);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	dir_of(path, dir, sizeof(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int read_whole(const char *path, char **data, size_t *bytes, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return fail(err, errlen, -EINVAL, "%s: not a regular file", path);
	}
	size_t n = (size_t)sb.st_size;
	char *buf = malloc(n ? n : 1);
	if (!buf) {
		close(fd);
		return fail(err, errlen, -ENOMEM, "%s: out of memory (%zu bytes)", path, n);
	}
	size_t done = 0;
	while (done < n) {
		ssize_t r = read(fd, buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			free(buf);
			close(fd);
			return fail(err, errlen, -e, "%s: read failed: %s", path, strerror(e));
		}
		done += (size_t)r;
	}
	close(fd);
	*data = buf;
	*bytes = n;
	return 0;
}

static void model_header(const struct gpt2_config *c, int32_t header[256])
{
	memset(header, 0, 256 * sizeof(int32_t));
	header[0] = LLMC_MODEL_MAGIC;
	header[1] = LLMC_MODEL_VERSION;
	header[2] = c->max_seq_len;
	header[3] = c->vocab_size;
	header[4] = c->nr_layers;
	header[5] = c->nr_heads;
	header[6] = c->channels;
	header[7] = c->padded_vocab_size;
}

/* A NaN or infinity in a checkpoint is a run ruined for good: refused on write and on read. */
static int check_finite(const char *path, const char *what, const float *p, size_t n, char *err,
	size_t errlen)
{
	size_t bad;
	if (guard_all_finite(p, n, &bad))
		return 0;
	return fail(err, errlen, -EINVAL,
		"%s: %s %zu of %zu is not finite (%g); refusing "
		"non-finite weights",
		path, what, bad, n, (double)p[bad]);
}

int ckpt_write_model(const char *path, const struct gpt2 *m, char *err, size_t errlen)
{
	int rc = check_finite(path, "parameter", m->params_memory, m->nr_params, err, errlen);
	if (rc < 0)
		return rc;
	int32_t header[256];
	model_header(&m->config, header);
	struct piece pieces[] = {
		{ header, sizeof(header) },
		{ m->params_memory, m->nr_params * sizeof(float) },
	};
	return write_atomic(path, pieces, 2, err, errlen);
}

/* Checks a header against the file size; fills c. */
static int parse_model_header(const char *path, const int32_t *h, uint64_t file_bytes,
	struct gpt2_config *c, char *err, size_t errlen)
{
	if (h[0] != LLMC_MODEL_MAGIC)
		return fail(err, errlen, -EINVAL, "%s: not an llm.c model file (magic %d, want %d)",
			path, h[0], LLMC_MODEL_MAGIC);
	if (h[1] != LLMC_MODEL_VERSION)
		return fail(err, errlen, -EINVAL,
			"%s: llm.c model version %d not supported (want 3, fp32)", path, h[1]);
	c->max_seq_len = h[2];
	c->vocab_size = h[3];
	c->nr_layers = h[4];
	c->nr_heads = h[5];
	c->channels = h[6];
	c->padded_vocab_size = h[7];
	if (c->max_seq_len < 1 || c->max_seq_len > 1 << 20 || c->vocab_size < 1 ||
		c->vocab_size > 1 << 24 || c->padded_vocab_size < c->vocab_size ||
		c->padded_vocab_size > 1 << 24 || c->nr_layers < 1 || c->nr_layers > 4096 ||
		c->nr_heads < 1 || c->channels < 1 || c->channels > 1 << 16 ||
		c->channels % c->nr_heads != 0)
		return fail(err, errlen, -EINVAL,
			"%s: bad model shape (maxT %d, V %d, Vp %d, L %d, NH %d, C %d)", path,
			c->max_seq_len, c->vocab_size, c->padded_vocab_size, c->nr_layers,
			c->nr_heads, c->channels);
	size_t sizes[GPT2_NR_PARAM_TENSORS];
	gpt2_param_sizes(c, sizes);
	uint64_t nr = 0;
	for (int i = 0; i < GPT2_NR_PARAM_TENSORS; i++)
		nr += sizes[i];
	uint64_t want = 1024 + nr * 4;
	if (file_bytes != want)
		return fail(err, errlen, -EINVAL,
			"%s: size %llu bytes, the header's model needs %llu", path,
			(unsigned long long)file_bytes, (unsigned long long)want);
	return 0;
}

int ckpt_read_model_config(const char *path, struct gpt2_config *c, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	int32_t h[256];
	struct stat sb;
	ssize_t n = pread(fd, h, sizeof(h), 0);
	int rc = fstat(fd, &sb);
	close(fd);
	if (rc < 0 || n != (ssize_t)sizeof(h))
		return fail(err, errlen, -EINVAL, "%s: too short for an llm.c model header", path);
	return parse_model_header(path, h, (uint64_t)sb.st_size, c, err, errlen);
}

int ckpt_read_model(const char *path, struct gpt2 *m, char *err, size_t errlen)
{
	char *buf;
	size_t n;
	int rc = read_whole(path, &buf, &n, err, errlen);
	if (rc < 0)
		return rc;
	struct gpt2_config c;
	if (n < 1024) {
		rc = fail(err, errlen, -EINVAL, "%s: too short for an llm.c model header", path);
		goto out;
	}
	rc = parse_model_header(path, (const int32_t *)buf, n, &c, err, errlen);
	if (rc < 0)
		goto out;
	if (memcmp(&c, &m->config, sizeof(c)) != 0) {
		rc = fail(err, errlen, -EINVAL,
			"%s: model shape (L %d, NH %d, C %d, V %d, maxT %d) differs from the run's "
			"(L %d, NH %d, C %d, V %d, maxT %d)",
			path, c.nr_layers, c.nr_heads, c.channels, c.vocab_size, c.max_seq_len,
			m->config.nr_layers, m->config.nr_heads, m->config.channels,
			m->config.vocab_size, m->config.max_seq_len);
		goto out;
	}
	rc = check_finite(path, "parameter", (const float *)(buf + 1024), m->nr_params, err,
		errlen);
	if (rc == 0)
		memcpy(m->params_memory, buf + 1024, m->nr_params * sizeof(float));
out:
	free(buf);
	return rc;
}

/* The state file's header: everything before the settings text. */
static void state_head(const struct ckpt_state *st, uint64_t nr_params, uint32_t settings_bytes,
	unsigned char head[STATE_HEADER_BYTES])
{
	uint32_t magic = STATE_MAGIC, version = STATE_VERSION;
	uint64_t fields[5] = { st->step, st->rng, st->loader_epoch, st->loader_position,
		nr_params };
	memcpy(head, &magic, 4);
	memcpy(head + 4, &version, 4);
	memcpy(head + 8, fields, sizeof(fields));
	memcpy(head + 8 + sizeof(fields), &settings_bytes, 4);
	memcpy(head + STATE_V1_HEADER_BYTES, &st->loader_block_bytes, 4);
	memcpy(head + STATE_V1_HEADER_BYTES + 4, &st->loader_window_blocks, 4);
}

int ckpt_write_state(const char *path, const struct gpt2 *m, const struct ckpt_state *st, char *err,
	size_t errlen)
{
	size_t moment_bytes = m->nr_params * sizeof(float);
	int rc = check_finite(path, "first moment", m->m_memory, m->nr_params, err, errlen);
	if (rc == 0)
		rc = check_finite(path, "second moment", m->v_memory, m->nr_params, err, errlen);
	if (rc < 0)
		return rc;
	const char *settings = st->settings ? st->settings : "";
	uint32_t settings_bytes = (uint32_t)strlen(settings);
	unsigned char head[STATE_HEADER_BYTES];
	state_head(st, m->nr_params, settings_bytes, head);
	uint64_t sum = fnv1a(FNV_OFFSET, head, sizeof(head));
	sum = fnv1a(sum, settings, settings_bytes);
	sum = fnv1a(sum, m->m_memory, moment_bytes);
	sum = fnv1a(sum, m->v_memory, moment_bytes);
	struct piece pieces[] = {
		{ head, sizeof(head) },
		{ settings, settings_bytes },
		{ m->m_memory, moment_bytes },
		{ m->v_memory, moment_bytes },
		{ &sum, sizeof(sum) },
	};
	return write_atomic(path, pieces, 5, err, errlen);
}

int ckpt_read_state(const char *path, struct gpt2 *m, struct ckpt_state *st, char *err,
	size_t errlen)
{
	char *buf;
	size_t n;
	memset(st, 0, sizeof(*st));
	int rc = read_whole(path, &buf, &n, err, errlen);
	if (rc < 0)
		return rc;
	uint32_t magic, version, settings_bytes, order[2] = { 0, 0 };
	uint64_t fields[5];
	size_t head_bytes = STATE_HEADER_BYTES;
	if (n < STATE_V1_HEADER_BYTES + 8) {
		rc = fail(err, errlen, -EINVAL, "%s: too short for a ferry state file", path);
		goto out;
	}
	memcpy(&magic, buf, 4);
	memcpy(&version, buf + 4, 4);
	memcpy(fields, buf + 8, sizeof(fields));
	memcpy(&settings_bytes, buf + 8 + sizeof(fields), 4);
	if (magic != STATE_MAGIC) {
		rc = fail(err, errlen, -EINVAL, "%s: not a ferry state file (bad magic)", path);
		goto out;
	}
	if (version != STATE_VERSION && version != 2 && version != 1) {
		rc = fail(err, errlen, -EINVAL, "%s: state file version %u not supported", path,
			version);
		goto out;
	}
	if (version == 1) {
		head_bytes = STATE_V1_HEADER_BYTES;
	} else if (n >= STATE_HEADER_BYTES + 8) {
		memcpy(order, buf + STATE_V1_HEADER_BYTES, sizeof(order));
	} else {
		rc = fail(err, errlen, -EINVAL, "%s: too short for a ferry state file", path);
		goto out;
	}
	uint64_t nr_params = fields[4];
	if (nr_params > (uint64_t)1 << 40 ||
		n != head_bytes + (uint64_t)settings_bytes + nr_params * 8 + 8) {
		rc = fail(err, errlen, -EINVAL, "%s: size %zu bytes does not match its header",
			path, n);
		goto out;
	}
	uint64_t sum, want = fnv1a(FNV_OFFSET, buf, n - 8);
	memcpy(&sum, buf + n - 8, 8);
	if (sum != want) {
		rc = fail(err, errlen, -EINVAL, "%s: checksum mismatch (corrupt state file)", path);
		goto out;
	}
	if (m && m->nr_params != nr_params) {
		rc = fail(err, errlen, -EINVAL,
			"%s: holds moments of %llu parameters, model has %zu", path,
			(unsigned long long)nr_params, m->nr_params);
		goto out;
	}
	const char *settings = buf + head_bytes;
	/* the moments are floats at a byte offset of the settings' length: checked unaligned */
	for (uint64_t i = 0; i < nr_params * 2; i++) {
		float x;
		memcpy(&x, settings + settings_bytes + i * 4, 4);
		if (!isfinite(x)) {
			rc = fail(err, errlen, -EINVAL,
				"%s: %s moment %llu is not finite; refusing "
				"non-finite optimizer state",
				path, i < nr_params ? "first" : "second",
				(unsigned long long)(i % nr_params));
			goto out;
		}
	}
	if (memchr(settings, '\0', settings_bytes)) {
		rc = fail(err, errlen, -EINVAL, "%s: settings hold a NUL byte", path);
		goto out;
	}
	st->settings = strndup(settings, settings_bytes);
	if (!st->settings) {
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	st->nr_params = nr_params;
	st->version = version;
	st->step = fields[0];
	st->rng = fields[1];
	st->loader_epoch = fields[2];
	st->loader_position = fields[3];
	st->loader_block_bytes = order[0];
	st->loader_window_blocks = order[1];
	if (m) {
		const char *moments = settings + settings_bytes;
		memcpy(m->m_memory, moments, nr_params * 4);
		memcpy(m->v_memory, moments + nr_params * 4, nr_params * 4);
	}
out:
	free(buf);
	return rc;
}

void ckpt_paths(const char *dir, uint64_t step, char *model, char *state, size_t len)
{
	if (model)
		snprintf(model, len, "%s/model_%08llu.bin", dir, (unsigned long long)step);
	if (state)
		snprintf(state, len, "%s/state_%08llu.bin", dir, (unsigned long long)step);
}

/* Steps of the complete checkpoints in dir, ascending; count in *nr. */
static uint64_t *list_steps(const char *dir, size_t *nr)
{
	*nr = 0;
	DIR *d = opendir(dir);
	if (!d)
		return NULL;
	uint64_t *steps = NULL;
	size_t cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		/* exactly state_DDDDDDDD.bin, or manifest_DDDDDDDD.txt (a sharded one, complete
		 * or not: ckpt_verify says which) */
		const char *name = e->d_name;
		unsigned long long s;
		if (strlen(name) == 18 && strncmp(name, "state_", 6) == 0 &&
			strcmp(name + 14, ".bin") == 0 && strspn(name + 6, "0123456789") == 8)
			s = strtoull(name + 6, NULL, 10);
		else if (strlen(name) == 21 && strncmp(name, "manifest_", 9) == 0 &&
			 strcmp(name + 17, ".txt") == 0 && strspn(name + 9, "0123456789") == 8)
			s = strtoull(name + 9, NULL, 10);
		else
			continue;
		char model[PATH_MAX];
		ckpt_paths(dir, s, model, NULL, sizeof(model));
		if (access(model, R_OK) != 0)
			continue;
		if (*nr == cap) {
			cap = cap ? cap * 2 : 16;
			uint64_t *grown = realloc(steps, cap * sizeof(*steps));
			if (!grown)
				break;
			steps = grown;
		}
		steps[(*nr)++] = s;
	}
	closedir(d);
	for (size_t i = 1; i < *nr; i++) /* insertion sort: a handful of entries */
		for (size_t j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
			uint64_t t = steps[j];
			steps[j] = steps[j - 1];
			steps[j - 1] = t;
		}
	/* a step with both a state file and a manifest (a crash between formats) once */
	size_t u = 0;
	for (size_t i = 0; i < *nr; i++)
		if (u == 0 || steps[u - 1] != steps[i])
			steps[u++] = steps[i];
	*nr = u;
	return steps;
}

/* ---- sharded checkpoints (ckpt.h) ---- */

#define SHARD_MAGIC        0x48535246u /* "FRSH" */
#define SHARD_VERSION      1u
#define SHARD_HEADER_BYTES 48
#define MANIFEST_FIRST     "ferry checkpoint manifest 1\n"

static void sharded_path(char *path, size_t len, const char *dir, const char *what, uint64_t step)
{
	if (strcmp(what, "manifest") == 0)
		snprintf(path, len, "%s/manifest_%08llu.txt", dir, (unsigned long long)step);
	else
		snprintf(path, len, "%s/DONE_%08llu", dir, (unsigned long long)step);
}

static void shard_path(char *path, size_t len, const char *dir, uint64_t step, int rank)
{
	snprintf(path, len, "%s/shard_%08llu_%05d.bin", dir, (unsigned long long)step, rank);
}

static void fsync_dir(const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
}

/* The step's DONE first (it is no longer complete), then its manifest and every shard file of
 * the step, whatever world size wrote them. */
static void drop_sharded(const char *dir, uint64_t step)
{
	char path[PATH_MAX], prefix[32];
	sharded_path(path, sizeof(path), dir, "DONE", step);
	if (unlink(path) == 0)
		fsync_dir(dir);
	sharded_path(path, sizeof(path), dir, "manifest", step);
	unlink(path);
	int n = snprintf(prefix, sizeof(prefix), "shard_%08llu_", (unsigned long long)step);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, prefix, (size_t)n) == 0 &&
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
			unlink(path);
	closedir(d);
}

static bool is_complete(const char *dir, uint64_t step)
{
	char path[PATH_MAX];
	ckpt_paths(dir, step, NULL, path, sizeof(path));
	if (access(path, F_OK) == 0)
		return true;
	sharded_path(path, sizeof(path), dir, "DONE", step);
	return access(path, F_OK) == 0;
}

/* --keep: the keep newest complete checkpoints up to step stay, with the incomplete ones
 * newer than the oldest of those; everything older goes, markers and shards with it. */
static void prune(const char *dir, uint64_t step, int keep)
{
	if (keep <= 0)
		return;
	size_t nr;
	uint64_t *steps = list_steps(dir, &nr);
	/* Checkpoints after this step are left alone: they are of a future this run abandoned
	 * when it resumed from an older one because they did not verify, and counting them
	 * would rotate out the good ones (this run overwrites them when it gets there). */
	while (nr > 0 && steps[nr - 1] > step)
		nr--;
	int complete = 0;
	for (size_t i = nr; i-- > 0;) {
		if (complete < keep) {
			complete += is_complete(dir, steps[i]);
			continue;
		}
		char model[PATH_MAX], state[PATH_MAX];
		ckpt_paths(dir, steps[i], model, state, sizeof(model));
		/* the state file and DONE first: without them it no longer counts as complete */
		unlink(state);
		drop_sharded(dir, steps[i]);
		unlink(model);
	}
	free(steps);
}

int ckpt_shard_begin(const char *dir, uint64_t step, char *err, size_t errlen)
{
	char state[PATH_MAX];
	ckpt_paths(dir, step, NULL, state, sizeof(state));
	drop_sharded(dir, step);
	if (unlink(state) < 0 && errno != ENOENT)
		return fail(err, errlen, -errno, "%s: %s", state, strerror(errno));
	fsync_dir(dir);
	return 0;
}

int ckpt_write_shard(const char *dir, uint64_t step, int rank, int world_size, uint64_t nr_params,
	uint64_t lo, uint64_t hi, const float *m, const float *v, struct ckpt_shard_info *info,
	char *err, size_t errlen)
{
	char path[PATH_MAX];
	shard_path(path, sizeof(path), dir, step, rank);
	size_t n = (size_t)(hi - lo);
	int rc = check_finite(path, "first moment", m, n, err, errlen);
	if (rc == 0)
		rc = check_finite(path, "second moment", v, n, err, errlen);
	if (rc < 0)
		return rc;
	unsigned char head[SHARD_HEADER_BYTES];
	uint32_t u32[4] = { SHARD_MAGIC, SHARD_VERSION, (uint32_t)rank, (uint32_t)world_size };
	uint64_t u64[4] = { step, nr_params, lo, hi };
	memcpy(head, u32, sizeof(u32));
	memcpy(head + sizeof(u32), u64, sizeof(u64));
	struct piece pieces[] = {
		{ head, sizeof(head) },
		{ m, n * sizeof(float) },
		{ v, n * sizeof(float) },
	};
	XXH3_state_t *h = XXH3_createState();
	if (!h)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	XXH3_64bits_reset(h);
	for (int i = 0; i < 3; i++)
		XXH3_64bits_update(h, pieces[i].data, pieces[i].bytes);
	info->xxh3 = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	info->lo = lo;
	info->hi = hi;
	info->bytes = SHARD_HEADER_BYTES + 2 * (uint64_t)n * sizeof(float);
	return write_atomic(path, pieces, 3, err, errlen);
}

int ckpt_write_manifest(const char *dir, const struct ckpt_state *st, uint64_t nr_params,
	int zero_stage, int world_size, const struct ckpt_shard_info *shards, char *err,
	size_t errlen)
{
	char path[PATH_MAX], *text = NULL;
	size_t len = 0;
	sharded_path(path, sizeof(path), dir, "manifest", st->step);
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	const char *settings = st->settings ? st->settings : "";
	fprintf(f,
		MANIFEST_FIRST "step %llu\nworld_size %d\nzero_stage %d\nnr_params %llu\n"
			       "rng %llu\nloader_epoch %llu\nloader_position %llu\n"
			       "loader_block_bytes %u\nloader_window_blocks %u\n",
		(unsigned long long)st->step, world_size, zero_stage, (unsigned long long)nr_params,
		(unsigned long long)st->rng, (unsigned long long)st->loader_epoch,
		(unsigned long long)st->loader_position, st->loader_block_bytes,
		st->loader_window_blocks);
	for (int r = 0; r < world_size; r++)
		fprintf(f, "shard %d %llu %llu %llu %016llx\n", r, (unsigned long long)shards[r].lo,
			(unsigned long long)shards[r].hi, (unsigned long long)shards[r].bytes,
			(unsigned long long)shards[r].xxh3);
	fprintf(f, "settings %zu\n%s\n", strlen(settings), settings);
	fflush(f);
	/* the manifest's own hash last: a torn or edited manifest is refused */
	fprintf(f, "xxh3 %016llx\n", (unsigned long long)XXH3_64bits(text, len));
	if (fclose(f) != 0) {
		free(text);
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	}
	struct piece piece = { text, len };
	int rc = write_atomic(path, &piece, 1, err, errlen);
	free(text);
	return rc;
}

int ckpt_finish_sharded(const char *dir, uint64_t step, int keep, char *err, size_t errlen)
{
	char path[PATH_MAX], line[64];
	sharded_path(path, sizeof(path), dir, "DONE", step);
	int n = snprintf(line, sizeof(line), "step %llu\n", (unsigned long long)step);
	struct piece piece = { line, (size_t)n };
	int rc = write_atomic(path, &piece, 1, err, errlen);
	if (rc == 0)
		prune(dir, step, keep);
	return rc;
}

/* A manifest as read: the state (settings owned), the layout and each shard's entry. */
struct manifest {
	struct ckpt_state st;
	uint64_t nr_params;
	int zero_stage, world_size;
	struct ckpt_shard_info *shards;
};

static void manifest_done(struct manifest *mf)
{
	ckpt_state_done(&mf->st);
	free(mf->shards);
	mf->shards = NULL;
}

static int read_manifest(const char *dir, uint64_t step, struct manifest *mf, char *err,
	size_t errlen)
{
	char path[PATH_MAX], *buf;
	size_t n;
	memset(mf, 0, sizeof(*mf));
	sharded_path(path, sizeof(path), dir, "manifest", step);
	int rc = read_whole(path, &buf, &n, err, errlen);
	if (rc < 0)
		return rc;
	rc = fail(err, errlen, -EINVAL, "%s: not a ferry checkpoint manifest", path);
	/* the last line: "xxh3 HEX\n" over everything before it */
	if (n < 24 || memchr(buf, '\0', n) || buf[n - 1] != '\n' ||
		strncmp(buf, MANIFEST_FIRST, strlen(MANIFEST_FIRST)) != 0)
		goto out;
	buf[n - 1] = '\0';
	char *last = strrchr(buf, '\n');
	unsigned long long sum;
	if (!last || sscanf(last + 1, "xxh3 %16llx", &sum) != 1)
		goto out;
	if (sum != XXH3_64bits(buf, (size_t)(last + 1 - buf))) {
		rc = fail(err, errlen, -EINVAL, "%s: checksum mismatch (corrupt manifest)", path);
		goto out;
	}
	*last = '\0';
	unsigned long long v[7];
	unsigned u[2];
	int pos = 0;
	char *p = buf + strlen(MANIFEST_FIRST);
	if (sscanf(p,
		    "step %llu\nworld_size %d\nzero_stage %d\nnr_params %llu\nrng %llu\n"
		    "loader_epoch %llu\nloader_position %llu\nloader_block_bytes %u\n"
		    "loader_window_blocks %u\n%n",
		    &v[0], &mf->world_size, &mf->zero_stage, &v[1], &v[2], &v[3], &v[4], &u[0],
		    &u[1], &pos) != 9 ||
		pos == 0 || v[0] != step || mf->world_size < 1 || mf->world_size > 1 << 20 ||
		v[1] > (uint64_t)1 << 40)
		goto out;
	p += pos;
	mf->st.step = v[0];
	mf->nr_params = mf->st.nr_params = v[1];
	mf->st.rng = v[2];
	mf->st.loader_epoch = v[3];
	mf->st.loader_position = v[4];
	mf->st.loader_block_bytes = u[0];
	mf->st.loader_window_blocks = u[1];
	mf->st.version = STATE_VERSION;
	mf->shards = calloc((size_t)mf->world_size, sizeof(*mf->shards));
	if (!mf->shards) {
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	uint64_t covered = 0;
	for (int r = 0; r < mf->world_size; r++) {
		int rr;
		struct ckpt_shard_info *s = &mf->shards[r];
		unsigned long long a, b, c, d;
		pos = 0;
		if (sscanf(p, "shard %d %llu %llu %llu %16llx\n%n", &rr, &a, &b, &c, &d, &pos) !=
				5 ||
			pos == 0 || rr != r || a != covered || b < a || b > mf->nr_params ||
			c != SHARD_HEADER_BYTES + 8 * (b - a))
			goto out;
		*s = (struct ckpt_shard_info){ a, b, c, d };
		covered = b;
		p += pos;
	}
	size_t settings_bytes;
	pos = 0;
	/* the settings run from after their line to the newline before the xxh3 line (*last) */
	if (covered != mf->nr_params || sscanf(p, "settings %zu%n", &settings_bytes, &pos) != 1 ||
		pos == 0 || p[pos++] != '\n' || (size_t)(last - (p + pos)) != settings_bytes)
		goto out;
	mf->st.settings = strndup(p + pos, settings_bytes);
	if (!mf->st.settings) {
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	rc = 0;
out:
	free(buf);
	if (rc < 0)
		manifest_done(mf);
	return rc;
}

/* One shard file against its manifest entry: size, XXH3, header, finite moments. */
static int verify_shard(const char *dir, uint64_t step, const struct manifest *mf, int r, char *err,
	size_t errlen)
{
	char path[PATH_MAX], *buf;
	size_t n;
	const struct ckpt_shard_info *s = &mf->shards[r];
	shard_path(path, sizeof(path), dir, step, r);
	int rc = read_whole(path, &buf, &n, err, errlen);
	if (rc < 0)
		return rc;
	uint32_t u32[4];
	uint64_t u64[4];
	if (n != s->bytes) {
		rc = fail(err, errlen, -EINVAL, "%s: size %zu bytes, the manifest says %llu", path,
			n, (unsigned long long)s->bytes);
		goto out;
	}
	if (XXH3_64bits(buf, n) != s->xxh3) {
		rc = fail(err, errlen, -EINVAL, "%s: XXH3 mismatch (corrupt shard)", path);
		goto out;
	}
	memcpy(u32, buf, sizeof(u32));
	memcpy(u64, buf + sizeof(u32), sizeof(u64));
	if (u32[0] != SHARD_MAGIC || u32[1] != SHARD_VERSION || u32[2] != (uint32_t)r ||
		u32[3] != (uint32_t)mf->world_size || u64[0] != step || u64[1] != mf->nr_params ||
		u64[2] != s->lo || u64[3] != s->hi) {
		rc = fail(err, errlen, -EINVAL, "%s: header differs from the manifest", path);
		goto out;
	}
	size_t nr = (size_t)(s->hi - s->lo);
	/* moments at an offset of 48: aligned */
	rc = check_finite(path, "moment", (const float *)(buf + SHARD_HEADER_BYTES), 2 * nr, err,
		errlen);
out:
	free(buf);
	return rc;
}

/* Whether a rank reads shard r of mf: every shard without a slice (ckpt_verify, the twin);
 * with one, the shards that overlap the moments the rank will load (ckpt_load_state's), and a
 * shard no slice overlaps (an empty one, of a tiny model on many ranks) by rank r % nr_ranks of
 * the ranks verifying together, so that each shard is read by some rank. */
static bool reads_shard(const struct manifest *mf, int r, const struct ckpt_slice *slice, int rank,
	int nr_ranks)
{
	const struct ckpt_shard_info *s = &mf->shards[r];
	if (!slice)
		return true;
	if (s->lo == s->hi)
		return r % nr_ranks == rank;
	size_t lo, hi;
	zero_slice_bounds((size_t)mf->nr_params, slice->world_size, slice->rank, slice->stage, &lo,
		&hi);
	return s->lo < hi && lo < s->hi;
}

static int verify_sharded(const char *dir, uint64_t step, const char *model, size_t nr_params,
	const struct ckpt_slice *slice, int rank, int nr_ranks, char *err, size_t errlen)
{
	struct manifest mf;
	int rc = read_manifest(dir, step, &mf, err, errlen);
	if (rc < 0)
		return rc;
	if (mf.nr_params != nr_params)
		rc = fail(err, errlen, -EINVAL,
			"manifest_%08llu.txt: holds moments of %llu parameters, %s has %zu",
			(unsigned long long)step, (unsigned long long)mf.nr_params, model,
			nr_params);
	for (int r = 0; r < mf.world_size && rc == 0; r++)
		if (reads_shard(&mf, r, slice, rank, nr_ranks))
			rc = verify_shard(dir, step, &mf, r, err, errlen);
	manifest_done(&mf);
	return rc;
}

int ckpt_save(const char *dir, const struct gpt2 *m, const struct ckpt_state *st, int keep,
	char *err, size_t errlen)
{
	char model[PATH_MAX], state[PATH_MAX];
	ckpt_paths(dir, st->step, model, state, sizeof(model));
	/* the moments before anything is written: no model file left without its state */
	int rc = check_finite(state, "first moment", m->m_memory, m->nr_params, err, errlen);
	if (rc == 0)
		rc = check_finite(state, "second moment", m->v_memory, m->nr_params, err, errlen);
	/* a sharded checkpoint of this step (an older run's) is no longer one */
	if (rc == 0)
		drop_sharded(dir, st->step);
	if (rc == 0)
		rc = ckpt_write_model(model, m, err, errlen);
	if (rc == 0)
		rc = ckpt_write_state(state, m, st, err, errlen);
	if (rc < 0)
		return rc;
	prune(dir, st->step, keep);
	return 0;
}

int ckpt_save_fetched(const char *dir, const struct gpt2_config *c, const struct ckpt_state *st,
	int keep, ckpt_fetch_fn fetch, void *arg, char *err, size_t errlen)
{
	char model[PATH_MAX], state[PATH_MAX], tmp[PATH_MAX + 8], dname[PATH_MAX];
	ckpt_paths(dir, st->step, model, state, sizeof(model));
	snprintf(tmp, sizeof(tmp), "%s.tmp", state);
	size_t sizes[GPT2_NR_PARAM_TENSORS], n = 0;
	gpt2_param_sizes(c, sizes);
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++)
		n += sizes[k];
	const char *settings = st->settings ? st->settings : "";
	uint32_t settings_bytes = (uint32_t)strlen(settings);
	unsigned char head[STATE_HEADER_BYTES];
	state_head(st, n, settings_bytes, head);
	float *buf = malloc(n * sizeof(float));
	if (!buf)
		return fail(err, errlen, -ENOMEM, "%s: out of memory (%zu floats)", state, n);
	/* the state file first, into its temp file: the moments are checked before the model file
	 * is written (no model file left without its state), and it is renamed last */
	int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	uint64_t sum = fnv1a(FNV_OFFSET, head, sizeof(head));
	sum = fnv1a(sum, settings, settings_bytes);
	rc = write_all(fd, head, sizeof(head));
	if (rc == 0)
		rc = write_all(fd, settings, settings_bytes);
	for (int what = CKPT_FIRST_MOMENTS; what <= CKPT_SECOND_MOMENTS && rc == 0; what++) {
		if ((rc = fetch(arg, what, buf, err, errlen)) < 0)
			goto out;
		rc = check_finite(state,
			what == CKPT_FIRST_MOMENTS ? "first moment" : "second moment", buf, n, err,
			errlen);
		if (rc < 0)
			goto out;
		sum = fnv1a(sum, buf, n * sizeof(float));
		rc = write_all(fd, buf, n * sizeof(float));
	}
	if (rc == 0)
		rc = write_all(fd, &sum, sizeof(sum));
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	fd = -1;
	if (rc < 0) {
		rc = fail(err, errlen, rc, "%s: %s", tmp, strerror(-rc));
		goto out;
	}
	/* a sharded checkpoint of this step (an older run's) is no longer one */
	drop_sharded(dir, st->step);
	if ((rc = fetch(arg, CKPT_PARAMS, buf, err, errlen)) < 0)
		goto out;
	struct gpt2 whole = { .config = *c, .nr_params = n, .params_memory = buf };
	if ((rc = ckpt_write_model(model, &whole, err, errlen)) < 0)
		goto out;
	if (rename(tmp, state) < 0) {
		rc = fail(err, errlen, -errno, "%s: %s", state, strerror(errno));
		goto out;
	}
	dir_of(state, dname, sizeof(dname));
	int dfd = open(dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	prune(dir, st->step, keep);
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		unlink(tmp);
	free(buf);
	return rc;
}

int ckpt_latest(const char *dir, uint64_t *step)
{
	size_t nr;
	uint64_t *steps = list_steps(dir, &nr);
	int rc = -ENOENT;
	if (nr > 0) {
		*step = steps[nr - 1];
		rc = 0;
	}
	free(steps);
	return rc;
}

/* ckpt_verify, of a sharded checkpoint only the shards reads_shard gives this rank. */
static int verify_step(const char *dir, uint64_t step, const struct ckpt_slice *slice, int rank,
	int nr_ranks, char *err, size_t errlen)
{
	char model[PATH_MAX], state[PATH_MAX];
	ckpt_paths(dir, step, model, state, sizeof(model));
	/* sharded: complete only with its DONE, which rank 0 writes once every shard is on disk */
	bool sharded = access(state, F_OK) != 0;
	if (sharded) {
		char done[PATH_MAX];
		sharded_path(done, sizeof(done), dir, "DONE", step);
		if (access(done, F_OK) != 0)
			return fail(err, errlen, -EINVAL,
				"DONE_%08llu missing: the checkpoint was never completed",
				(unsigned long long)step);
	}
	struct gpt2_config c;
	char *buf;
	size_t n;
	int rc = read_whole(model, &buf, &n, err, errlen);
	if (rc < 0)
		return rc;
	if (n < 1024)
		rc = fail(err, errlen, -EINVAL, "%s: too short for an llm.c model header", model);
	else
		rc = parse_model_header(model, (const int32_t *)buf, n, &c, err, errlen);
	size_t nr_params = n >= 1024 ? (n - 1024) / sizeof(float) : 0;
	if (rc == 0)
		rc = check_finite(model, "parameter", (const float *)(buf + 1024), nr_params, err,
			errlen);
	free(buf);
	if (rc < 0)
		return rc;
	if (sharded)
		return verify_sharded(dir, step, model, nr_params, slice, rank, nr_ranks, err,
			errlen);
	struct ckpt_state st;
	rc = ckpt_read_state(state, NULL, &st, err, errlen);
	if (rc < 0)
		return rc;
	ckpt_state_done(&st);
	if (st.nr_params != nr_params)
		return fail(err, errlen, -EINVAL,
			"%s: holds moments of %llu parameters, %s has %zu", state,
			(unsigned long long)st.nr_params, model, nr_params);
	return 0;
}

int ckpt_verify(const char *dir, uint64_t step, char *err, size_t errlen)
{
	return verify_step(dir, step, NULL, 0, 1, err, errlen);
}

int ckpt_find_resumable(const char *dir, uint64_t *step, ckpt_skip_fn skipped, void *arg)
{
	size_t nr;
	uint64_t *steps = list_steps(dir, &nr);
	int rc = -ENOENT;
	char err[PATH_MAX + 256];
	for (size_t i = nr; i-- > 0;) {
		if (ckpt_verify(dir, steps[i], err, sizeof(err)) == 0) {
			*step = steps[i];
			rc = 0;
			break;
		}
		if (skipped)
			skipped(arg, steps[i], err);
		rc = -EINVAL;
	}
	free(steps);
	return rc;
}

/* 1 + the newest of steps (ascending) below bound, or 0 for none: what allreduce_max agrees on */
static uint64_t next_below(const uint64_t *steps, size_t nr, uint64_t bound)
{
	for (size_t i = nr; i-- > 0;)
		if (steps[i] < bound)
			return steps[i] + 1;
	return 0;
}

/* A skip reason as words for allreduce_max_u64: only its finder's are non-zero, so the maximum
 * is its bytes on every rank. */
#define REASON_WORDS ((PATH_MAX + 256 + 7) / 8)

int ckpt_find_resumable_ranks(struct comm *c, const char *dir, const struct ckpt_slice *slice,
	uint64_t *step, ckpt_skip_fn skipped, void *arg)
{
	size_t nr;
	uint64_t *steps = list_steps(dir, &nr);
	uint64_t agreed[2] = { 0, next_below(steps, nr, UINT64_MAX) };
	/* on the stack: an allocation that failed on one rank alone would leave it out of the
	 * collective the others wait in */
	uint64_t reason[REASON_WORDS];
	char err[sizeof(reason)];
	int rc = -ENOENT;
	/* The candidate is the newest step any rank lists: a rank whose listing lags (a shared
	 * file system's cache) checks it all the same, and no rank ever waits in a collective the
	 * others skipped. Each round then checks it and names the next in one collective. */
	c->ops->allreduce_max_u64(c, &agreed[1], 1);
	while (agreed[1] > 0) {
		uint64_t cand = agreed[1] - 1;
		bool bad =
			verify_step(dir, cand, slice, c->rank, c->world_size, err, sizeof(err)) < 0;
		/* the lowest rank that found something wrong says what */
		agreed[0] = bad ? (uint64_t)(c->world_size - c->rank) : 0;
		agreed[1] = next_below(steps, nr, cand);
		c->ops->allreduce_max_u64(c, agreed, 2);
		if (agreed[0] == 0) {
			*step = cand;
			rc = 0;
			break;
		}
		rc = -EINVAL;
		memset(reason, 0, sizeof(reason));
		if (c->rank == c->world_size - (int)agreed[0])
			memcpy(reason, err, strnlen(err, sizeof(err) - 1));
		c->ops->allreduce_max_u64(c, reason, REASON_WORDS);
		((char *)reason)[sizeof(reason) - 1] = '\0';
		if (skipped)
			skipped(arg, cand, (const char *)reason);
	}
	free(steps);
	return rc;
}

int ckpt_load_state(const char *dir, uint64_t step, struct gpt2 *m, uint64_t lo, uint64_t hi,
	struct ckpt_state *st, char *err, size_t errlen)
{
	char path[PATH_MAX];
	ckpt_paths(dir, step, NULL, path, sizeof(path));
	if (access(path, F_OK) == 0)
		return ckpt_read_state(path, m, st, err, errlen);
	struct manifest mf;
	memset(st, 0, sizeof(*st));
	int rc = read_manifest(dir, step, &mf, err, errlen);
	if (rc < 0)
		return rc;
	if (m && (m->nr_params != mf.nr_params || hi > mf.nr_params || lo > hi)) {
		rc = fail(err, errlen, -EINVAL,
			"manifest_%08llu.txt: holds moments of %llu parameters, model has %zu",
			(unsigned long long)step, (unsigned long long)mf.nr_params, m->nr_params);
		goto out;
	}
	/* each old shard that overlaps [lo, hi): its part of m and of v, nothing more */
	for (int r = 0; m && r < mf.world_size && rc == 0; r++) {
		const struct ckpt_shard_info *s = &mf.shards[r];
		uint64_t a = s->lo > lo ? s->lo : lo, b = s->hi < hi ? s->hi : hi;
		if (a >= b)
			continue;
		shard_path(path, sizeof(path), dir, step, r);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
			break;
		}
		size_t bytes = (size_t)(b - a) * sizeof(float);
		off_t m_at = SHARD_HEADER_BYTES + (off_t)(a - s->lo) * 4;
		off_t v_at = m_at + (off_t)(s->hi - s->lo) * 4;
		if (pread(fd, m->m_memory + a, bytes, m_at) != (ssize_t)bytes ||
			pread(fd, m->v_memory + a, bytes, v_at) != (ssize_t)bytes)
			rc = fail(err, errlen, -EIO, "%s: short read", path);
		else if ((rc = check_finite(path, "first moment", m->m_memory + a, b - a, err,
				  errlen)) == 0)
			rc = check_finite(path, "second moment", m->v_memory + a, b - a, err,
				errlen);
		close(fd);
	}
out:
	if (rc == 0) {
		*st = mf.st;
		mf.st.settings = NULL;
	}
	manifest_done(&mf);
	return rc;
}

int ckpt_tp_gather(struct comm *tensor, const struct gpt2 *m, const float *shard, float *whole,
	char *err, size_t errlen)
{
	size_t n = m->nr_params, T = (size_t)tensor->world_size;
	if (T == 1) {
		gpt2_tp_gather(m, 0, shard, whole);
		return 0;
	}
	if (tensor->ops->sendrecv) {
		/* to tensor rank 0 alone, one shard at a time: the others need no whole copy */
		if (tensor->rank != 0) {
			tensor->ops->sendrecv(tensor, shard, n * sizeof(float), 0, NULL, 0, -1);
			return 0;
		}
		gpt2_tp_gather(m, 0, shard, whole);
		float *buf = malloc(n * sizeof(float));
		if (!buf) {
			snprintf(err, errlen, "out of memory gathering a tensor-parallel shard");
			return -ENOMEM;
		}
		for (size_t t = 1; t < T; t++) {
			tensor->ops->sendrecv(tensor, NULL, 0, -1, buf, n * sizeof(float), (int)t);
			gpt2_tp_gather(m, (int)t, buf, whole);
		}
		free(buf);
		return 0;
	}
	/* a backend without point-to-point sends (NCCL): an all-gather, kept by rank 0 */
	float *all = malloc(T * n * sizeof(float));
	if (!all) {
		snprintf(err, errlen, "out of memory gathering %zu tensor-parallel shards", T);
		return -ENOMEM;
	}
	memcpy(all + (size_t)tensor->rank * n, shard, n * sizeof(float));
	tensor->ops->allgather(tensor, all, n);
	for (size_t t = 0; tensor->rank == 0 && t < T; t++)
		gpt2_tp_gather(m, (int)t, all + t * n, whole);
	free(all);
	return 0;
}

void ckpt_tp_scatter(const struct gpt2 *m, const float *whole, float *shard)
{
	gpt2_tp_scatter(m, m->tp.rank, whole, shard);
}
