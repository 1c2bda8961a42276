/* Prefetch from the training order: on a ferry mount, a thread keeps the daemon told of the
 * byte ranges of the batches after the one in use (FERRY_IOC_PREFETCH), in the order the
 * readers will read them, so that its fetches run ahead of the readers in order of need. The
 * sampler gives the order; the readers (loader.c, direct.c) then find the chunks present or in
 * flight. Off a ferry mount, or against a daemon without the call, nothing is done. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_i.h"

/* After the daemon's readahead bound stopped a call, the next try waits this long: the bound
 * frees as chunks land, which nothing tells the loader of. */
#define PREFETCH_RETRY_MS 20

/* Where a range of the order comes from: ranges[idx] of unit. */
struct pf_range {
	uint32_t shard;
	uint64_t offset, length;
	uint64_t unit;
	uint32_t idx;
};

/* The thread's own state (cursor, buffers); the counters are atomics in struct loader. */
struct prefetch {
	struct loader *l;
	uint64_t horizon; /* K: batches after the one in use, set at start */
	uint64_t limit;   /* the same, cut to a quarter of the daemon's cache */
	uint64_t gen;     /* l->prefetch_gen this cursor belongs to */
	uint64_t unit;    /* cursor: the next range to hand over is ranges[idx] of unit */
	uint32_t idx;
	bool stalled; /* the bound stopped the last call: retry at retry_ms */
	double retry_ms;
	/* The ranges of one unit, computed when the cursor enters it. */
	uint64_t seen; /* the consumer's global batch the last round started from */
	uint64_t cur_unit;
	struct pf_range *cur;
	uint32_t nr_cur, max_cur;
	struct sampler_run *runs;
	struct ferry_prefetch *req;
	struct pf_range *sent; /* what req->ranges[i] stands for */
	int fd;
	uint32_t fd_shard;
};

/* Units of the order: what the readers read at once. Shuffled, a window (each read whole,
 * the tail after the whole windows being the last one of an epoch; only those the epoch's used
 * samples reach); in file order, a batch. */
static uint64_t units_per_epoch(const struct sampler *s)
{
	if (!s->shuffle)
		return s->steps_per_epoch;
	return sampler_nr_windows_used(s);
}

/* The unit holding global batch g (epoch * steps_per_epoch + position): shuffled, the window of
 * this rank's first sample of it (a batch straddling two windows reads from both, and the
 * next unit is handed over with the first). */
static uint64_t unit_of(const struct sampler *s, uint64_t g)
{
	uint64_t e = g / s->steps_per_epoch, p = g % s->steps_per_epoch;

	return e * units_per_epoch(s) +
	       (s->shuffle ? sampler_window(s, sampler_index(s, p, 0)) : p);
}

/* The first global batch whose first sample (on this rank) lies in unit or after it. */
static uint64_t unit_first_batch(const struct sampler *s, uint64_t unit)
{
	uint64_t U = units_per_epoch(s), e = unit / U, u = unit % U, k, micro, p;

	if (!s->shuffle)
		return e * s->steps_per_epoch + u;
	k = u * s->window_samples;
	micro = (uint64_t)s->world * s->batch;
	p = k <= (uint64_t)s->rank * s->batch
		    ? 0
		    : (k - (uint64_t)s->rank * s->batch + micro - 1) / micro;
	return e * s->steps_per_epoch + (p < s->steps_per_epoch ? p : s->steps_per_epoch);
}

static uint64_t global_batch(const struct sampler *s, const struct loader_state *st)
{
	return st->epoch * s->steps_per_epoch + st->position;
}

static void add_range(struct prefetch *p, uint32_t shard, uint64_t off, uint64_t len)
{
	struct pf_range *last = p->nr_cur ? &p->cur[p->nr_cur - 1] : NULL;

	/* Samples end to end in a shard (each T + 1 tokens, one shared with the next) are one
	 * range. */
	if (last && last->shard == shard && off >= last->offset &&
		off <= last->offset + last->length) {
		if (off + len > last->offset + last->length)
			last->length = off + len - last->offset;
		return;
	}
	if (p->nr_cur == p->max_cur)
		return; /* cannot happen: max_cur bounds every unit */
	p->cur[p->nr_cur] = (struct pf_range){ shard, off, len, p->cur_unit, p->nr_cur };
	p->nr_cur++;
}

/* The ranges of unit, in the order the readers read them: a window's pieces as window_load
 * cuts them, a file-order batch's samples as fill_batch reads them. */
static void unit_ranges(struct prefetch *p, uint64_t unit)
{
	struct loader *l = p->l;
	const struct sampler *s = &l->sampler;
	const struct dataset *ds = &l->ds;
	const uint64_t T = l->cfg.seq_len, w = ds->token_bytes, U = units_per_epoch(s);
	uint64_t e = unit / U, u = unit % U;

	p->cur_unit = unit;
	p->nr_cur = 0;
	if (!s->shuffle) {
		for (uint32_t j = 0; j < s->batch; j++) {
			uint64_t g = sampler_sample(s, e, u, j);
			uint32_t sh = dataset_find(ds, g);

			add_range(p, sh,
				ds->data_offset + (g - ds->shards[sh].first_sample) * T * w,
				(T + 1) * w);
		}
		return;
	}
	for (uint32_t i = 0, n = sampler_window_runs(s, e, u, p->runs); i < n; i++) {
		uint64_t g = p->runs[i].first, left = p->runs[i].nr;

		while (left) {
			uint32_t sh = dataset_find(ds, g);
			const struct shard *shard = &ds->shards[sh];
			uint64_t nr = shard->first_sample + shard->nr_samples - g;

			if (nr > left)
				nr = left;
			add_range(p, sh, ds->data_offset + (g - shard->first_sample) * T * w,
				(nr * T + 1) * w);
			g += nr;
			left -= nr;
		}
	}
}

/* An fd of shard on the mount, for the ioctl: one kept open, the last one used. */
static int shard_fd(struct prefetch *p, uint32_t shard)
{
	if (p->fd >= 0 && p->fd_shard == shard)
		return p->fd;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = open(p->l->ds.shards[shard].path, O_RDONLY | O_CLOEXEC);
	p->fd_shard = shard;
	return p->fd < 0 ? -errno : p->fd;
}

enum pf_result { PF_DONE, PF_STALLED, PF_OFF };

/* Hands the daemon the ranges from the cursor up to the end of unit last, one ioctl per run
 * of ranges in one shard, and moves the cursor past what it went through. Without the lock. */
static enum pf_result hand_over(struct prefetch *p, uint64_t last)
{
	struct loader *l = p->l;

	while (p->unit <= last) {
		struct ferry_prefetch *req = p->req;
		uint32_t n = 0, shard = 0;
		int fd;

		/* Gather one shard's run of ranges. */
		while (p->unit <= last && n < FERRY_PREFETCH_MAX_RANGES) {
			struct pf_range *r;

			if (p->cur_unit != p->unit || !p->cur)
				unit_ranges(p, p->unit);
			if (p->idx >= p->nr_cur) {
				p->unit++;
				p->idx = 0;
				continue;
			}
			r = &p->cur[p->idx];
			if (n && r->shard != shard)
				break;
			shard = r->shard;
			if (n && r->offset >= req->ranges[n - 1].offset &&
				r->offset <=
					req->ranges[n - 1].offset + req->ranges[n - 1].length) {
				/* File order: batch after batch end to end, one range. */
				struct ferry_prefetch_range *q = &req->ranges[n - 1];

				if (r->offset + r->length > q->offset + q->length)
					q->length = r->offset + r->length - q->offset;
				p->idx++;
				continue;
			}
			p->sent[n] = *r;
			req->ranges[n].offset = r->offset;
			req->ranges[n].length = r->length;
			n++;
			p->idx++;
		}
		if (!n)
			break;
		req->nr_ranges = n;
		req->flags = 0;
		fd = shard_fd(p, shard);
		atomic_fetch_add(&l->pf_calls, 1);
		if (fd < 0 || ioctl(fd, FERRY_IOC_PREFETCH, req) < 0) {
			int err = fd < 0 ? fd : -errno;

			/* Not a ferry mount, or a daemon older than the call: quietly off. */
			if (err != -ENOTTY)
				loader_say(l,
					"prefetch: %s: FERRY_IOC_PREFETCH: %s; not prefetching",
					l->ds.shards[shard].path, strerror(-err));
			return PF_OFF;
		}
		atomic_fetch_add(&l->pf_started, req->nr_started);
		if (!p->limit || p->limit == p->horizon) {
			uint64_t batch_bytes =
				(uint64_t)l->cfg.batch * (l->cfg.seq_len + 1) * l->ds.token_bytes;
			uint64_t cap = req->cache_max_bytes / 4 / batch_bytes;

			/* Fetched far beyond what the cache holds, chunks would be evicted
			 * before they are read. */
			uint64_t limit = req->cache_max_bytes && cap < p->horizon ? (cap ? cap : 1)
										  : p->horizon;

			bool cut = limit != (p->limit ? p->limit : p->horizon);

			p->limit = limit;
			atomic_store(&l->pf_horizon, limit);
			if (cut)
				return PF_DONE; /* the round sets its end again */
		}
		if (req->nr_done < n) {
			/* Stopped by the daemon's readahead bound: go on from that range later
			 * (the chunks of it already asked for are skipped by the daemon). */
			p->unit = p->sent[req->nr_done].unit;
			p->idx = p->sent[req->nr_done].idx;
			atomic_store(&l->pf_ahead_to, unit_first_batch(&l->sampler, p->unit));
			atomic_fetch_add(&l->pf_bound, 1);
			return PF_STALLED;
		}
		atomic_store(&l->pf_ahead_to, unit_first_batch(&l->sampler, p->unit));
	}
	return PF_DONE;
}

/* One round: from the consumer's batch, the last unit to hand over, and the hand-over. Entered
 * and left under l->lock. */
static enum pf_result prefetch_round(struct prefetch *p)
{
	struct loader *l = p->l;
	const struct sampler *s = &l->sampler;
	uint64_t c = global_batch(s, &l->next_state), first = unit_of(s, c), last, gen;
	enum pf_result res;

	p->seen = c;
	if (p->gen != l->prefetch_gen || p->unit < first) {
		/* A seek, or the consumer passed what was handed over: start from its unit. */
		p->gen = l->prefetch_gen;
		p->unit = first;
		p->idx = 0;
	}
	for (;;) {
		uint64_t limit = p->limit;

		/* The units of the next K batches, and, shuffled, the window after them, which
		 * the readers read ahead of its first batch. */
		last = unit_of(s, c + (limit ? limit : p->horizon)) + (s->shuffle ? 1 : 0);
		if (p->unit > last)
			return PF_DONE;
		gen = p->gen;
		pthread_mutex_unlock(&l->lock);
		res = hand_over(p, last);
		pthread_mutex_lock(&l->lock);
		if (gen != l->prefetch_gen)
			return PF_DONE; /* a seek came meanwhile: the next round starts over */
		if (res != PF_DONE || p->limit == (limit ? limit : p->horizon))
			return res;
		/* The daemon's cache cut K (its first answer says how large it is). */
	}
}

static void *prefetch_main(void *arg)
{
	struct prefetch *p = arg;
	struct loader *l = p->l;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		enum pf_result res;
		struct timespec ts;

		if (p->stalled) {
			double now = loader_now_ms();

			if (now < p->retry_ms) {
				double left = p->retry_ms - now;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += (time_t)(left / 1e3);
				ts.tv_nsec += (long)((left - (time_t)(left / 1e3) * 1e3) * 1e6);
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&l->prefetch_cond, &l->lock, &ts);
				continue;
			}
		}
		res = prefetch_round(p);
		if (res == PF_OFF) {
			atomic_store(&l->pf_on, false);
			break;
		}
		p->stalled = res == PF_STALLED;
		if (p->stalled) {
			p->retry_ms = loader_now_ms() + PREFETCH_RETRY_MS;
			continue;
		}
		/* Until the consumer moves on (or seeks, or the loader stops): signals sent
		 * while the round ran without the lock are seen here. */
		if (l->stop || p->gen != l->prefetch_gen ||
			global_batch(&l->sampler, &l->next_state) != p->seen)
			continue;
		pthread_cond_wait(&l->prefetch_cond, &l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* K: FERRY_LOADER_PREFETCH or cfg.prefetch_batches, else LOADER_DEFAULT_PREFETCH_BYTES of
 * batches; at most an epoch; at least the ring's slots, which the readers fill ahead of the
 * consumer. 0: off. */
static uint64_t horizon(const struct loader *l)
{
	const char *env = getenv("FERRY_LOADER_PREFETCH");
	uint64_t batch_bytes = (uint64_t)l->cfg.batch * (l->cfg.seq_len + 1) * l->ds.token_bytes;
	uint64_t k;

	if (env)
		k = strtoull(env, NULL, 10);
	else if (l->cfg.prefetch_batches)
		k = l->cfg.prefetch_batches;
	else
		k = (LOADER_DEFAULT_PREFETCH_BYTES + batch_bytes - 1) / batch_bytes;
	if (env && !k)
		return 0;
	/* Past an epoch the order asks for the same bytes again: on a small dataset the whole
	 * of it is asked for once, not once per epoch of the horizon. */
	if (k > l->sampler.steps_per_epoch)
		k = l->sampler.steps_per_epoch;
	return k < l->nr_slots ? l->nr_slots : k;
}

int prefetch_start(struct loader *l)
{
	struct prefetch *p;
	uint64_t k;
	int ret;

	if (!l->ds.nr_shards || !direct_probe(l->ds.shards[0].path) || !(k = horizon(l)))
		return 0;
	atomic_store(&l->pf_horizon, k);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->l = l;
	p->fd = -1;
	p->horizon = k;
	p->max_cur = l->cfg.batch > l->max_pieces ? l->cfg.batch : l->max_pieces;
	p->cur = calloc(p->max_cur, sizeof(*p->cur));
	p->runs = calloc(SAMPLER_MAX_RUNS(&l->sampler), sizeof(*p->runs));
	p->req = calloc(1, sizeof(*p->req));
	p->sent = calloc(FERRY_PREFETCH_MAX_RANGES, sizeof(*p->sent));
	l->prefetch = p;
	if (!p->cur || !p->runs || !p->req || !p->sent)
		return -ENOMEM;
	atomic_store(&l->pf_on, true);
	/* The first round before the readers start, so that the daemon has the order before
	 * their first read: its fetches then go in the order of need from the start. */
	pthread_mutex_lock(&l->lock);
	p->gen = l->prefetch_gen;
	p->cur_unit = UINT64_MAX;
	switch (prefetch_round(p)) {
	case PF_OFF:
		atomic_store(&l->pf_on, false);
		pthread_mutex_unlock(&l->lock);
		return 0;
	case PF_STALLED:
		p->stalled = true;
		p->retry_ms = loader_now_ms() + PREFETCH_RETRY_MS;
		break;
	case PF_DONE:
		break;
	}
	pthread_mutex_unlock(&l->lock);
	ret = pthread_create(&l->prefetch_thread, NULL, prefetch_main, p);
	if (ret) {
		atomic_store(&l->pf_on, false);
		return -ret;
	}
	l->prefetch_started = true;
	if (l->cfg.verbose)
		loader_say(l,
			"prefetch from the order: the daemon is told of the next %llu batches",
			(unsigned long long)p->horizon);
	return 0;
}

void prefetch_stop(struct loader *l)
{
	struct prefetch *p = l->prefetch;

	if (l->prefetch_started) {
		/* l->stop is set and prefetch_cond signalled by loader_free. */
		pthread_join(l->prefetch_thread, NULL);
		l->prefetch_started = false;
	}
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p->cur);
	free(p->runs);
	free(p->req);
	free(p->sent);
	free(p);
	l->prefetch = NULL;
}

void loader_get_prefetch(const struct loader *l, struct loader_prefetch_info *pi)
{
	struct loader *m = (struct loader *)l;
	uint64_t c, to;

	memset(pi, 0, sizeof(*pi));
	pi->on = atomic_load(&m->pf_on);
	pi->horizon = atomic_load(&m->pf_horizon);
	pthread_mutex_lock(&m->lock);
	c = global_batch(&m->sampler, &m->next_state);
	pthread_mutex_unlock(&m->lock);
	to = atomic_load(&m->pf_ahead_to);
	pi->ahead = pi->on && to > c ? to - c : 0;
	pi->nr_calls = atomic_load(&m->pf_calls);
	pi->nr_bound = atomic_load(&m->pf_bound);
	pi->nr_started = atomic_load(&m->pf_started);
}
