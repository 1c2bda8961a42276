/* The loader: a reader thread turns the sampler's order into reads (ferry fast path, io_uring
 * or pread) that fill a fixed ring of staging buffers ahead of use; loader_next_batch hands
 * out the next filled batch (and starts its copy to the GPU). See loader/loader.h. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"
#include "loader/loader_i.h"

enum read_path { PATH_DIRECT, PATH_CUFILE, PATH_URING, PATH_PREAD };

static const char *const path_names[] = {
	[PATH_DIRECT] = "ferry-direct",
	[PATH_CUFILE] = "cufile",
	[PATH_URING] = "io_uring",
	[PATH_PREAD] = "pread",
};

#define DIRECT_ALIGN     4096u
#define DIRECT_HOLD_MS   30000u
#define DIRECT_NR_FDS    16
/* After this many failed fast-path reads the loader stops trying it. */
#define DIRECT_MAX_FAILS 8

/* A staging slot. Written by the reader while the ring says it is being filled, read by the
 * consumer once taken; the ring (under loader->lock) orders the two. */
struct loader_slot {
	struct loader_state state;
	uint32_t row_stride;
	int err;
	char errmsg[256];
	int32_t *wide;          /* 2 * B * T int32: inputs then targets, or one run of B*T+1 */
	const int32_t *inputs, *targets;
};

/* An O_DIRECT descriptor of a ferry cache file, reused while the daemon answers the same
 * path for the shard. Reader thread only. */
struct direct_fd {
	uint32_t shard;
	int fd;
	char path[sizeof(((struct ferry_resident *)0)->cache_path)];
};

/* A fast-path read waiting to be copied out of the bounce buffer. Reader thread only. */
struct direct_copy {
	uint32_t op;            /* index in ops */
	void *dst;
	const void *src;
	uint32_t len;
	int plain_fd;           /* the shard itself, for the fallback */
	uint64_t plain_off;
};

/* Fields under "lock" are shared; the rest are set in loader_open and then either read-only
 * or owned by the reader thread, as marked. */
struct loader {
	struct loader_config cfg;
	char *paths;
	struct dataset ds;      /* reader thread (after open) */
	struct sampler sampler; /* read-only */
	struct stage *stage;
	size_t raw_bytes;
	struct loader_slot *slots;
	uint32_t nr_slots;

	/* reader thread only */
	struct read_uring *uring;
	struct read_op *ops;
	struct direct_copy *copies;
	void *bounce;
	size_t bounce_bytes;
	struct direct_fd dfds[DIRECT_NR_FDS];
	uint32_t direct_fails;
	bool direct_allowed;
	bool force_pread;

	_Atomic int path;       /* enum read_path now in use */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ring ring;               /* lock */
	struct loader_state fill_state; /* lock: the batch the reader fills next */
	struct loader_state next_state; /* lock: the batch loader_next_batch returns next */
	bool reader_busy;               /* lock: filling a slot outside the lock */
	bool reader_paused;             /* lock: stopped after a failed batch until a seek */
	bool stop;                      /* lock */
	int sticky_err;                 /* lock: the consumer met this error; until a seek */
	bool thread_started;
	pthread_t thread;
	char last_error[256];           /* consumer thread */
};

static void say(const struct loader *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Library code: warnings go to stderr, never stdout. */
static void say(const struct loader *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("ferry loader: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool probe_ferry(const char *path)
{
	return getxattr(path, FERRY_XATTR_SOURCE, NULL, 0) >= 0;
}

/* ---- the ferry fast path ---- */

static void direct_close_all(struct loader *l)
{
	for (int i = 0; i < DIRECT_NR_FDS; i++) {
		if (l->dfds[i].fd >= 0)
			close(l->dfds[i].fd);
		l->dfds[i].fd = -1;
	}
}

static int direct_fd_for(struct loader *l, uint32_t shard, const char *cache_path)
{
	struct direct_fd *d = &l->dfds[shard % DIRECT_NR_FDS];

	if (d->fd >= 0 && d->shard == shard && strcmp(d->path, cache_path) == 0)
		return d->fd;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = open(cache_path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (d->fd < 0)
		return -errno;
	d->shard = shard;
	snprintf(d->path, sizeof(d->path), "%s", cache_path);
	return d->fd;
}

static void direct_failed(struct loader *l, const char *what, int err)
{
	if (++l->direct_fails == 1)
		say(l, "ferry fast path: %s: %s; reading through the mount instead", what,
			strerror(-err));
	if (l->direct_fails >= DIRECT_MAX_FAILS && l->direct_allowed) {
		l->direct_allowed = false;
		atomic_store(&l->path, l->uring ? PATH_URING : PATH_PREAD);
		say(l, "ferry fast path failed %u times; using %s from now on", l->direct_fails,
			path_names[atomic_load(&l->path)]);
	}
}

/* Turns op (a plain read of shard s) into an O_DIRECT read of the daemon's cache file into
 * the bounce buffer at *bounce_pos. Samples are not 4 KiB aligned, so O_DIRECT cannot land
 * them in place; the copy out of the bounce buffer costs far less than the fetch. 0, or
 * -errno and op unchanged (the caller reads plainly). */
static int direct_prepare(struct loader *l, uint32_t s, struct read_op *op, uint32_t idx,
	size_t *bounce_pos, uint32_t *nr_copies)
{
	struct ferry_resident res;
	uint64_t a_off, a_end;
	int fd;

	memset(&res, 0, sizeof(res));
	res.offset = op->off;
	res.length = op->len;
	res.hold_ms = DIRECT_HOLD_MS;
	if (ioctl(op->fd, FERRY_IOC_RESIDENT, &res) < 0) {
		direct_failed(l, "FERRY_IOC_RESIDENT", -errno);
		return -errno;
	}
	res.cache_path[sizeof(res.cache_path) - 1] = '\0';
	fd = direct_fd_for(l, s, res.cache_path);
	if (fd < 0) {
		direct_failed(l, "opening the cache file with O_DIRECT", fd);
		return fd;
	}
	a_off = op->off & ~(uint64_t)(DIRECT_ALIGN - 1);
	a_end = (op->off + op->len + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
	if (*bounce_pos + (a_end - a_off) > l->bounce_bytes)
		return -ENOSPC;
	l->copies[*nr_copies] = (struct direct_copy){
		.op = idx,
		.dst = op->dst,
		.src = (char *)l->bounce + *bounce_pos + (op->off - a_off),
		.len = op->len,
		.plain_fd = op->fd,
		.plain_off = op->off,
	};
	(*nr_copies)++;
	op->fd = fd;
	op->dst = (char *)l->bounce + *bounce_pos;
	op->need = (uint32_t)(op->off + op->len - a_off);
	op->len = (uint32_t)(a_end - a_off);
	op->off = a_off;
	*bounce_pos += a_end - a_off;
	return 0;
}

/* ---- the reader ---- */

static int run_ops(struct loader *l, struct read_op *ops, uint32_t n)
{
	int ret;

	if (l->uring && !l->force_pread) {
		ret = read_uring_run(l->uring, ops, n);
		if (ret != -ENOSYS && ret != -EBADR)
			return ret;
	}
	return read_pread_run(ops, n);
}

/* Reads the batch at st into slot: the sampler's B samples, one read per sample, or one read
 * for all when they lie end to end in one shard (sequential order). */
static int fill_batch(struct loader *l, uint32_t slot_idx, const struct loader_state *st)
{
	struct loader_slot *slot = &l->slots[slot_idx];
	struct dataset *ds = &l->ds;
	const uint32_t B = l->cfg.batch, T = l->cfg.seq_len, w = ds->token_bytes;
	char *raw = stage_host_buffer(l->stage, slot_idx);
	uint32_t nr_ops = 0, nr_copies = 0, s0 = 0;
	uint64_t tok0 = 0;
	size_t bounce_pos = 0;
	bool run = true;
	int ret;

	slot->errmsg[0] = '\0';
	for (uint32_t j = 0; j < B; j++) {
		uint64_t g = sampler_sample(&l->sampler, st->epoch, st->position, j);
		uint32_t s = dataset_find(ds, g);
		uint64_t tok = (g - ds->shards[s].first_sample) * T;

		if (j == 0) {
			s0 = s;
			tok0 = tok;
		} else if (s != s0 || tok != tok0 + (uint64_t)j * T) {
			run = false;
		}
		l->ops[j] = (struct read_op){
			.fd = s, /* shard index until prepared below */
			.off = ds->data_offset + tok * w,
			.len = (T + 1) * w,
			.dst = raw + (size_t)j * (T + 1) * w,
		};
	}
	nr_ops = B;
	if (run) {
		l->ops[0].len = ((uint64_t)B * T + 1) * w;
		l->ops[0].dst = raw;
		nr_ops = 1;
	}
	slot->row_stride = run ? T : T + 1;
	for (uint32_t i = 0; i < nr_ops; i++) {
		struct read_op *op = &l->ops[i];
		uint32_t s = (uint32_t)op->fd;
		struct shard *sh = &ds->shards[s];

		ret = dataset_prepare(ds, s, slot->errmsg, sizeof(slot->errmsg));
		if (ret < 0)
			return ret;
		op->fd = sh->fd;
		op->need = op->len;
		if (!l->direct_allowed)
			continue;
		if (!sh->ferry_probed) {
			sh->on_ferry = probe_ferry(sh->path);
			sh->ferry_probed = true;
		}
		if (sh->on_ferry)
			direct_prepare(l, s, op, i, &bounce_pos, &nr_copies);
	}
	ret = run_ops(l, l->ops, nr_ops);
	/* Fast-path reads that failed are redone through the mount; only a failure of a plain
	 * read fails the batch. */
	for (uint32_t c = 0; c < nr_copies; c++) {
		struct direct_copy *cp = &l->copies[c];
		struct read_op *op = &l->ops[cp->op];

		if (op->res >= 0 && (uint32_t)op->res >= op->need) {
			memcpy(cp->dst, cp->src, cp->len);
			continue;
		}
		direct_failed(l, "O_DIRECT read of the cache file", op->res < 0 ? op->res : -EIO);
		*op = (struct read_op){ .fd = cp->plain_fd, .off = cp->plain_off, .len = cp->len,
			.need = cp->len, .dst = cp->dst };
		if (read_pread_run(op, 1) < 0)
			break;
	}
	ret = 0;
	for (uint32_t i = 0; i < nr_ops; i++) {
		if (l->ops[i].res < 0 || (uint32_t)l->ops[i].res < l->ops[i].need) {
			ret = l->ops[i].res < 0 ? l->ops[i].res : -EIO;
			snprintf(slot->errmsg, sizeof(slot->errmsg), "reading %llu bytes at %llu: %s",
				(unsigned long long)l->ops[i].len, (unsigned long long)l->ops[i].off,
				strerror(-ret));
			return ret;
		}
	}
	if (run) {
		/* One run of B*T+1 tokens: targets are inputs shifted by one, in the same array. */
		widen_run(raw, w, (size_t)B * T + 1, slot->wide);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + 1;
	} else {
		widen_rows(raw, w, B, T, T + 1, slot->wide, slot->wide + (size_t)B * T);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + (size_t)B * T;
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct loader *l = arg;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		struct loader_state st;
		int slot = ring_fill_slot(&l->ring);
		int ret;

		if (slot < 0 || l->reader_paused) {
			pthread_cond_wait(&l->cond, &l->lock);
			continue;
		}
		st = l->fill_state;
		l->reader_busy = true;
		pthread_mutex_unlock(&l->lock);

		ret = stage_reclaim(l->stage, (uint32_t)slot);
		if (ret == 0)
			ret = fill_batch(l, (uint32_t)slot, &st);
		else
			snprintf(l->slots[slot].errmsg, sizeof(l->slots[slot].errmsg),
				"waiting for the copy to the GPU failed");
		if (ret < 0 && ret != -EINVAL && ret != -ENOMEM)
			ret = -EIO;
		l->slots[slot].state = st;
		l->slots[slot].err = ret;

		pthread_mutex_lock(&l->lock);
		l->reader_busy = false;
		ring_filled(&l->ring);
		sampler_advance(&l->sampler, &l->fill_state);
		if (ret < 0)
			l->reader_paused = true;
		pthread_cond_broadcast(&l->cond);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* ---- the public API ---- */

static void choose_path(struct loader *l)
{
	const char *io = getenv("FERRY_LOADER_IO");
	const char *direct = getenv("FERRY_LOADER_DIRECT");
	enum read_path p;

	l->force_pread = io && strcmp(io, "pread") == 0;
	if (!l->force_pread && read_uring_new(&l->uring, 64) < 0)
		l->uring = NULL;
	p = l->uring && !l->force_pread ? PATH_URING : PATH_PREAD;
	/* The fast path is tried when the first shard is on a ferry mount; each shard is probed
	 * again when first read, and any failure falls back to p. */
	l->direct_allowed = !(direct && strcmp(direct, "0") == 0) && l->ds.nr_shards &&
		probe_ferry(l->ds.shards[0].path);
	if (l->direct_allowed) {
		p = PATH_DIRECT;
		/* Hook for GPUDirect Storage: with libcufile the cache file could be read straight
		 * into device memory (cuFileRead). Not written yet: the host fast path is used. */
		if (l->cfg.device >= 0) {
			void *h = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);

			if (h) {
				say(l, "libcufile found; GPU-direct reads are not implemented, "
					"using %s", path_names[p]);
				dlclose(h);
			}
		}
	}
	atomic_store(&l->path, p);
	if (l->cfg.verbose)
		say(l, "%u shards, %llu samples, %s %u-byte tokens, read path %s, staging %s",
			l->ds.nr_shards, (unsigned long long)l->ds.nr_samples,
			shard_format_name(l->ds.format), l->ds.token_bytes, path_names[p],
			stage_name());
}

int loader_open(struct loader **out, const struct loader_config *cfg, char *errbuf, size_t errlen)
{
	struct loader *l;
	uint32_t B = cfg->batch, T = cfg->seq_len, W = cfg->world_size ? cfg->world_size : 1;
	char dummy[8];
	uint64_t max_bytes;
	int ret;

	if (!errbuf || !errlen) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*out = NULL;
	if (B == 0 || T == 0) {
		snprintf(errbuf, errlen, "batch and seq_len must be positive");
		return -EINVAL;
	}
	if (cfg->rank >= W) {
		snprintf(errbuf, errlen, "rank %u is not below world size %u", cfg->rank, W);
		return -EINVAL;
	}
	/* One read of a whole batch must fit a read_op (u32 length); 1 GiB per batch is far
	 * beyond any sane B*T. */
	max_bytes = ((uint64_t)B * (T + 1) + 1) * 4;
	if (max_bytes > (1ull << 30)) {
		snprintf(errbuf, errlen, "batch %u x seq_len %u is too large", B, T);
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < DIRECT_NR_FDS; i++)
		l->dfds[i].fd = -1;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->cfg = *cfg;
	l->cfg.world_size = W;
	l->nr_slots = cfg->nr_buffers ? cfg->nr_buffers : 4;
	l->paths = strdup(cfg->paths ? cfg->paths : "");
	l->cfg.paths = l->paths;
	ret = -ENOMEM;
	if (!l->paths)
		goto nomem;
	ret = dataset_open(&l->ds, l->paths, cfg->format, T, errbuf, errlen);
	if (ret < 0)
		goto fail;
	sampler_init(&l->sampler, l->ds.nr_samples, B, W, cfg->rank, cfg->seed, cfg->shuffle);
	if (l->sampler.steps_per_epoch == 0) {
		snprintf(errbuf, errlen, "%s: %llu samples of %u+1 tokens, fewer than one step "
			"needs (batch %u x world %u)", l->paths, (unsigned long long)l->ds.nr_samples,
			T, B, W);
		ret = -EINVAL;
		goto fail;
	}
	l->raw_bytes = ((size_t)B * (T + 1) * l->ds.token_bytes + DIRECT_ALIGN - 1) &
		~(size_t)(DIRECT_ALIGN - 1);
	ret = stage_new(&l->stage, cfg->device, l->nr_slots, l->raw_bytes, B, T, errbuf, errlen);
	if (ret < 0)
		goto fail;
	ret = -ENOMEM;
	l->slots = calloc(l->nr_slots, sizeof(*l->slots));
	l->ops = calloc(B, sizeof(*l->ops));
	l->copies = calloc(B, sizeof(*l->copies));
	if (!l->slots || !l->ops || !l->copies)
		goto nomem;
	for (uint32_t i = 0; i < l->nr_slots; i++) {
		l->slots[i].wide = malloc((size_t)2 * B * T * sizeof(int32_t));
		if (!l->slots[i].wide)
			goto nomem;
	}
	choose_path(l);
	if (l->direct_allowed) {
		/* Each O_DIRECT read may span one more page at either end. */
		l->bounce_bytes = l->raw_bytes + (size_t)B * 2 * DIRECT_ALIGN;
		if (posix_memalign(&l->bounce, DIRECT_ALIGN, l->bounce_bytes) != 0) {
			l->bounce = NULL;
			goto nomem;
		}
	}
	ring_init(&l->ring, l->nr_slots);
	ret = pthread_create(&l->thread, NULL, reader_main, l);
	if (ret != 0) {
		snprintf(errbuf, errlen, "cannot start the reader thread: %s", strerror(ret));
		ret = -ret;
		goto fail;
	}
	l->thread_started = true;
	*out = l;
	return 0;
nomem:
	snprintf(errbuf, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	loader_free(l);
	return ret;
}

void loader_free(struct loader *l)
{
	if (!l)
		return;
	if (l->thread_started) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->thread, NULL);
	}
	stage_free(l->stage);
	for (uint32_t i = 0; l->slots && i < l->nr_slots; i++)
		free(l->slots[i].wide);
	free(l->slots);
	free(l->ops);
	free(l->copies);
	free(l->bounce);
	direct_close_all(l);
	read_uring_free(l->uring);
	dataset_done(&l->ds);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l->paths);
	free(l);
}

int loader_next_batch(struct loader *l, struct loader_batch *b)
{
	struct loader_slot *slot;
	double t0 = now_ms();
	int s, ret;

	memset(b, 0, sizeof(*b));
	pthread_mutex_lock(&l->lock);
	if (l->sticky_err) {
		ret = l->sticky_err;
		pthread_mutex_unlock(&l->lock);
		return ret;
	}
	/* The batch handed out last time is given back now: its buffers were valid until here. */
	ring_release_all(&l->ring);
	pthread_cond_broadcast(&l->cond);
	while ((s = ring_take_slot(&l->ring)) < 0)
		pthread_cond_wait(&l->cond, &l->lock);
	ring_taken(&l->ring);
	slot = &l->slots[s];
	if (slot->err) {
		l->sticky_err = slot->err;
		snprintf(l->last_error, sizeof(l->last_error), "%s", slot->errmsg);
		pthread_mutex_unlock(&l->lock);
		return slot->err;
	}
	l->next_state = slot->state;
	sampler_advance(&l->sampler, &l->next_state);
	pthread_mutex_unlock(&l->lock);

	b->wait_ms = now_ms() - t0;
	b->inputs = slot->inputs;
	b->targets = slot->targets;
	b->state = slot->state;
	ret = stage_upload(l->stage, (uint32_t)s, l->ds.token_bytes, slot->row_stride, b);
	if (ret < 0)
		snprintf(l->last_error, sizeof(l->last_error), "copy to the GPU failed");
	return ret;
}

void loader_get_state(const struct loader *l, struct loader_state *st)
{
	struct loader *m = (struct loader *)l;

	pthread_mutex_lock(&m->lock);
	*st = m->next_state;
	pthread_mutex_unlock(&m->lock);
}

int loader_seek(struct loader *l, const struct loader_state *st)
{
	if (st->position >= l->sampler.steps_per_epoch)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	while (l->reader_busy)
		pthread_cond_wait(&l->cond, &l->lock);
	ring_release_all(&l->ring);
	ring_reset(&l->ring);
	l->fill_state = *st;
	l->next_state = *st;
	l->reader_paused = false;
	l->sticky_err = 0;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

uint64_t loader_steps_per_epoch(const struct loader *l)
{
	return l->sampler.steps_per_epoch;
}

uint32_t loader_vocab_size(const struct loader *l)
{
	return l->ds.vocab;
}

const char *loader_path_name(const struct loader *l)
{
	return path_names[atomic_load(&((struct loader *)l)->path)];
}

const char *loader_last_error(const struct loader *l)
{
	return l->last_error;
}
