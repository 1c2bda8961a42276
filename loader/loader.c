/* The loader: a reader thread turns the sampler's order into reads (the ferry fast path of
 * direct.c, io_uring or pread) that fill a fixed ring of staging buffers ahead of use;
 * loader_next_batch hands out the next filled batch (and starts its copy to the GPU). See
 * loader/loader.h. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_i.h"

static const char *const path_names[] = {
	[PATH_DIRECT] = "ferry-direct",
	[PATH_CUFILE] = "cufile",
	[PATH_URING] = "io_uring",
	[PATH_PREAD] = "pread",
};

#define MAX_READERS 16

/* Library code: warnings go to stderr, never stdout. */
void loader_say(const struct loader *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("ferry loader: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

double loader_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- the readers ---- */

static int run_ops(struct reader *r, struct read_op *ops, uint32_t n)
{
	int ret;

	if (r->uring && !r->l->force_pread) {
		/* Cached data costs one syscall per op this way; what is missing (a cold mount)
		 * goes to io_uring, all in flight at once. */
		if (atomic_load(&r->l->nowait_ok)) {
			ret = read_nowait_run(ops, n);
			if (ret == -EOPNOTSUPP)
				atomic_store(&r->l->nowait_ok, false);
			else if ((uint32_t)ret == n)
				return 0;
		}
		ret = read_uring_run(r->uring, ops, n);
		if (ret != -ENOSYS && ret != -EBADR)
			return ret;
	}
	return read_pread_run(ops, n);
}

/* Gives back the shards this reader's batch kept open. */
void reader_unpin_shards(struct reader *r)
{
	struct loader *l = r->l;

	if (!r->nr_pinned)
		return;
	pthread_mutex_lock(&l->ds_lock);
	for (uint32_t i = 0; i < r->nr_pinned; i++)
		dataset_unpin(&l->ds, r->pinned[i]);
	pthread_mutex_unlock(&l->ds_lock);
	r->nr_pinned = 0;
}

/* Opens the shards of ops [first, end), whose fd holds a shard index until here (kept in
 * op_shard), and keeps them open until unpin_shards; each shard is pinned once. Probes each
 * once for the fast path. The caller keeps the distinct shards under max_pins (group_end). */
int reader_pin_shards(struct reader *r, uint32_t first, uint32_t end, char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct dataset *ds = &l->ds;
	bool direct = atomic_load(&l->direct_allowed);
	int ret = 0;

	pthread_mutex_lock(&l->ds_lock);
	for (uint32_t i = first; i < end; i++) {
		uint32_t s = (uint32_t)r->ops[i].fd;
		struct shard *sh = &ds->shards[s];
		uint32_t k;

		for (k = 0; k < r->nr_pinned && r->pinned[k] != s; k++)
			;
		if (k == r->nr_pinned) {
			ret = dataset_pin(ds, s, err, errlen);
			if (ret < 0)
				break;
			r->pinned[r->nr_pinned++] = s;
		}
		if (direct && !sh->ferry_probed) {
			sh->on_ferry = direct_probe(sh->path);
			sh->ferry_probed = true;
		}
		r->on_ferry[i] = direct && sh->on_ferry;
		r->ops[i].fd = sh->fd;
		r->ops[i].need = r->ops[i].len;
	}
	pthread_mutex_unlock(&l->ds_lock);
	return ret;
}

/* The end of the group of ops from first that are read at once: as many as touch at most
 * max_pins shards (the reader's share of the dataset's descriptors: ten thousand tiny shards
 * in a window must not need ten thousand), and, on the fast path, no two shards that share a
 * direct_fd slot (opening the cache file of one would close the other's under its read). */
uint32_t reader_group_end(struct reader *r, uint32_t first, uint32_t nr_ops)
{
	const bool direct = atomic_load(&r->l->direct_allowed);
	const uint32_t nr_dfds = r->l->nr_dfds;
	uint32_t n = 0, i;

	for (i = first; i < nr_ops; i++) {
		uint32_t s = r->op_shard[i], k;
		bool clash = false;

		for (k = 0; k < n && r->group[k] != s; k++)
			if (direct && r->group[k] % nr_dfds == s % nr_dfds)
				clash = true;
		if (k < n)
			continue;
		if (n == r->max_pins || clash)
			break;
		r->group[n++] = s;
	}
	return i;
}

/* Reads r->ops[first, end) (whose fd holds a shard index), all in flight at once, through the
 * ferry fast path where it applies (via the bounce buffer, or in place when in_place: window
 * pieces), and checks that each got its bytes. Their shards stay pinned until unpin_shards.
 * 0 or -errno with err set. */
static int read_group(struct reader *r, uint32_t first, uint32_t end, bool in_place, bool lone,
	char *err, size_t errlen)
{
	struct dataset *ds = &r->l->ds;
	uint32_t nr_copies;
	int ret;

	ret = reader_pin_shards(r, first, end, err, errlen);
	if (ret < 0)
		return ret;
	nr_copies = direct_prepare_group(r, first, end, in_place);
	run_ops(r, r->ops + first, end - first);
	direct_check_group(r, nr_copies, in_place, lone);
	for (uint32_t i = first; i < end; i++) {
		if (r->ops[i].res < 0 || (uint32_t)r->ops[i].res < r->ops[i].need) {
			ret = r->ops[i].res < 0 ? r->ops[i].res : -EIO;
			snprintf(err, errlen, "%s: reading %llu bytes at %llu: %s",
				ds->shards[r->op_shard[i]].path, (unsigned long long)r->ops[i].len,
				(unsigned long long)r->ops[i].off, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* Reads r->ops[0, nr_ops) (whose fd holds a shard index) a group at a time (see group_end),
 * each group's shards pinned only while it is read. 0 or -errno with err set. */
static int read_ops(struct reader *r, uint32_t nr_ops, bool in_place, char *err, size_t errlen)
{
	uint32_t first, end;
	int ret = 0;

	for (first = 0; first < nr_ops && ret == 0; first = end) {
		end = reader_group_end(r, first, nr_ops);
		ret = read_group(r, first, end, in_place, nr_ops == 1, err, errlen);
		reader_unpin_shards(r);
	}
	return ret;
}

/* Reads window (epoch, index) of this rank into win: its runs of samples, cut where shards
 * end, each piece with one read, all in flight at once. */
static int window_load(struct reader *r, struct window *win, uint64_t epoch, uint64_t index,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct dataset *ds = &l->ds;
	const uint64_t T = l->cfg.seq_len, w = ds->token_bytes;
	uint32_t nr_runs = sampler_window_runs(&l->sampler, epoch, index, r->runs);
	uint32_t n = 0;
	size_t pos = 0;
	int ret;

	for (uint32_t i = 0; i < nr_runs; i++) {
		uint64_t g = r->runs[i].first, left = r->runs[i].nr, slot = r->runs[i].slot;

		while (left) {
			uint32_t s = dataset_find(ds, g);
			const struct shard *sh = &ds->shards[s];
			uint64_t nr = sh->first_sample + sh->nr_samples - g;
			uint64_t off = ds->data_offset + (g - sh->first_sample) * T * w, bytes;

			if (nr > left)
				nr = left;
			bytes = (nr * T + 1) * w;
			if (n >= r->max_ops)
				goto too_big;
			if (bytes >= DIRECT_MIN_BYTES) {
				/* Room for an O_DIRECT read of the blocks around it, from a page
				 * boundary (see direct_prepare). */
				pos = (pos + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
				win->pieces[n].data = pos + (off & (DIRECT_BLOCK - 1));
				pos += ((off & (DIRECT_BLOCK - 1)) + bytes + DIRECT_BLOCK - 1) &
				       ~(size_t)(DIRECT_BLOCK - 1);
			} else {
				pos = (pos + 63) & ~(size_t)63;
				win->pieces[n].data = pos;
				pos += bytes;
			}
			if (pos > l->window_bytes)
				goto too_big;
			win->pieces[n].slot = slot;
			win->pieces[n].nr = nr;
			r->op_shard[n] = s;
			r->ops[n] = (struct read_op){
				.fd = (int)s, /* shard index until pinned */
				.off = off,
				.len = (uint32_t)bytes,
				.dst = win->buf + win->pieces[n].data,
			};
			n++;
			g += nr;
			slot += nr;
			left -= nr;
		}
	}
	win->nr_pieces = n;
	ret = read_ops(r, n, true, err, errlen);
	reader_unpin_shards(r);
	return ret;
too_big:
	/* Cannot happen: window_bytes and max_pieces bound every window; say so if it does. */
	snprintf(err, errlen, "window %llu of epoch %llu does not fit its buffer",
		(unsigned long long)index, (unsigned long long)epoch);
	return -EINVAL;
}

static struct window *window_find(struct loader *l, uint64_t epoch, uint64_t index)
{
	for (int i = 0; i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (win->state != WINDOW_FREE && win->epoch == epoch && win->index == index)
			return win;
	}
	return NULL;
}

/* A window to read another into: a free one, else the least recently used ready one nobody
 * copies from, other than keep. NULL when there is none now. Called under l->lock. */
static struct window *window_victim(struct loader *l, const struct window *keep)
{
	struct window *victim = NULL;

	for (int i = 0; i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (win->state == WINDOW_FREE)
			return win;
		if (win->state == WINDOW_READY && !win->users && win != keep &&
			(!victim || win->last_use < victim->last_use))
			victim = win;
	}
	return victim;
}

/* Reads window (epoch, index) into victim, which the caller set LOADING; entered and left
 * under l->lock, which it drops for the reads. */
static int window_fill(struct reader *r, struct window *victim, uint64_t epoch, uint64_t index,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	int ret;

	victim->state = WINDOW_LOADING;
	victim->epoch = epoch;
	victim->index = index;
	pthread_mutex_unlock(&l->lock);
	ret = window_load(r, victim, epoch, index, err, errlen);
	pthread_mutex_lock(&l->lock);
	victim->state = ret < 0 ? WINDOW_FREE : WINDOW_READY;
	victim->last_use = ++l->window_clock;
	pthread_cond_broadcast(&l->window_cond);
	return ret;
}

/* The window (epoch, index), read now if no reader has it or is reading it, with a use taken
 * (window_put gives it back). 0, or -errno with err set when reading it failed. With held (a
 * window the caller holds already), -EAGAIN instead of waiting for room: the caller must not
 * hold one window while it waits for another's room to be given back. */
static int window_get(struct reader *r, uint64_t epoch, uint64_t index, const struct window *held,
	struct window **out, char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct window *win;
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		win = window_find(l, epoch, index);
		if (win && win->state == WINDOW_READY) {
			win->users++;
			win->last_use = ++l->window_clock;
			break;
		}
		if (!win && (win = window_victim(l, held))) {
			ret = window_fill(r, win, epoch, index, err, errlen);
			if (ret < 0) {
				win = NULL;
				break;
			}
			continue;
		}
		if (!win && held) {
			ret = -EAGAIN;
			break;
		}
		/* Another reader is reading it, or every window is in use for a moment. */
		pthread_cond_wait(&l->window_cond, &l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	*out = win;
	return ret;
}

static void window_put(struct loader *l, struct window *win)
{
	pthread_mutex_lock(&l->lock);
	if (!--win->users)
		pthread_cond_broadcast(&l->window_cond);
	pthread_mutex_unlock(&l->lock);
}

/* Reads the window after (epoch, index) ahead of use, when a window can take it without
 * waiting; a failure is left for the batch that needs it to meet and report. Called under
 * l->lock. */
static void window_prefetch(struct reader *r, uint64_t epoch, uint64_t index)
{
	struct loader *l = r->l;
	struct window *victim, *keep = window_find(l, epoch, index);
	char err[8];

	if (index + 1 < sampler_nr_windows_used(&l->sampler)) {
		index++;
	} else {
		epoch++;
		index = 0;
	}
	if (window_find(l, epoch, index))
		return;
	victim = window_victim(l, keep);
	if (victim)
		window_fill(r, victim, epoch, index, err, sizeof(err));
}

/* The last piece of win starting at or before slot t. */
static const struct window_piece *window_piece_of(const struct window *win, uint64_t t)
{
	uint32_t lo = 0, hi = win->nr_pieces - 1;

	while (lo < hi) {
		uint32_t mid = (lo + hi + 1) / 2;

		if (win->pieces[mid].slot <= t)
			lo = mid;
		else
			hi = mid - 1;
	}
	return &win->pieces[lo];
}

/* Rows of a shuffled batch: each sample's T + 1 tokens come out of the window holding it (one,
 * or two when the batch straddles a window boundary), widened straight into the batch (and
 * copied raw into the staging buffer for the GPU). The rows lie at random in a window larger
 * than the CPU's caches: each is fetched while the one before it is widened (into inputs, then
 * from the cache again into targets). -EAGAIN (nothing held, nothing filled) when the second
 * window of a straddling batch has no room now: the caller reads the rows one by one. */
static int fill_from_window(struct reader *r, struct loader_slot *slot, char *raw,
	const struct loader_state *st)
{
	struct loader *l = r->l;
	const struct sampler *s = &l->sampler;
	const uint32_t B = l->cfg.batch, T = l->cfg.seq_len, w = l->ds.token_bytes;
	const size_t row_bytes = (size_t)(T + 1) * w;
	const uint64_t first = sampler_index(s, st->position, 0);
	const uint64_t index = sampler_window(s, first);
	const uint64_t last = sampler_window(s, first + B - 1);
	int32_t *inputs = slot->wide, *targets = slot->wide + (size_t)B * T;
	const char **rows = r->rows;
	struct window *win[2] = { NULL, NULL };
	int ret;

	ret = window_get(r, st->epoch, index, NULL, &win[0], slot->errmsg, sizeof(slot->errmsg));
	if (ret < 0)
		return ret;
	if (last != index) {
		/* Windows are taken in increasing order and the second only without waiting
		 * for room, so two readers never wait on each other's windows. */
		ret = window_get(r, st->epoch, last, win[0], &win[1], slot->errmsg,
			sizeof(slot->errmsg));
		if (ret < 0) {
			window_put(l, win[0]);
			return ret;
		}
	}
	for (uint32_t j = 0; j < B; j++) {
		uint64_t k = first + j;
		const struct window *wn = win[sampler_window(s, k) == index ? 0 : 1];
		uint64_t t = sampler_window_slot(s, st->epoch, k);
		const struct window_piece *p = window_piece_of(wn, t);

		rows[j] = wn->buf + p->data + (t - p->slot) * T * w;
	}
	for (uint32_t j = 0; j < B; j++) {
		int32_t *in = inputs + (size_t)j * T, *tg = targets + (size_t)j * T;

		if (j + 1 < B)
			for (size_t b = 0; b < row_bytes; b += 64)
				__builtin_prefetch(rows[j + 1] + b);
		widen_run(rows[j], w, T, in);
		widen_run(rows[j] + w, w, T, tg);
		if (l->cfg.device >= 0)
			memcpy(raw + (size_t)j * row_bytes, rows[j], row_bytes);
	}
	if (win[1])
		window_put(l, win[1]);
	window_put(l, win[0]);
	slot->row_stride = T + 1;
	slot->inputs = inputs;
	slot->targets = targets;
	return 0;
}

/* Reads the batch at st into slot: shuffled, out of its window; in file order (or shuffled
 * across two windows), with one read for the B samples when they lie end to end in one shard,
 * else one read per sample; then widens them. */
static int fill_batch(struct reader *r, uint32_t slot_idx, const struct loader_state *st)
{
	struct loader *l = r->l;
	struct loader_slot *slot = &l->slots[slot_idx];
	struct dataset *ds = &l->ds;
	const uint32_t B = l->cfg.batch, T = l->cfg.seq_len, w = ds->token_bytes;
	char *raw = stage_host_buffer(l->stage, slot_idx);
	uint32_t nr_ops = 0;
	bool run = true;
	int ret;

	slot->errmsg[0] = '\0';
	/* A batch over more than two windows (windows smaller than a batch), or whose second
	 * window has no room now, reads its samples one by one. */
	if (l->sampler.shuffle) {
		uint64_t first = sampler_index(&l->sampler, st->position, 0);

		if (sampler_window(&l->sampler, first + B - 1) <=
			sampler_window(&l->sampler, first) + 1) {
			ret = fill_from_window(r, slot, raw, st);
			if (ret != -EAGAIN)
				return ret;
			slot->errmsg[0] = '\0';
		}
		atomic_fetch_add(&l->nr_rows_alone, 1);
	}
	/* shards[] and first_sample are read-only after open: no lock to find a sample. */
	for (uint32_t j = 0; j < B; j++) {
		uint64_t g = sampler_sample(&l->sampler, st->epoch, st->position, j);
		uint32_t s = dataset_find(ds, g);
		uint64_t off = ds->data_offset + (g - ds->shards[s].first_sample) * T * w;

		if (j > 0 && (s != r->op_shard[0] || off != r->ops[0].off + (uint64_t)j * T * w))
			run = false;
		r->op_shard[j] = s;
		r->ops[j] = (struct read_op){
			.fd = (int)s, /* shard index until pinned */
			.off = off,
			.len = (T + 1) * w,
			.dst = raw + (size_t)j * (T + 1) * w,
		};
	}
	nr_ops = B;
	if (run) {
		r->ops[0].len = ((uint64_t)B * T + 1) * w;
		nr_ops = 1;
	}
	slot->row_stride = run ? T : T + 1;
	if (r->gds && atomic_load(&l->cufile_ok) && atomic_load(&l->direct_allowed) &&
		cufile_fill(r, slot_idx, nr_ops, raw) == 0)
		return 0;
	ret = read_ops(r, nr_ops, false, slot->errmsg, sizeof(slot->errmsg));
	if (ret < 0)
		goto out;
	if (run) {
		/* One run of B*T+1 tokens: targets are inputs shifted by one, in the same array. */
		widen_run(r->run_src ? r->run_src : raw, w, (size_t)B * T + 1, slot->wide);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + 1;
	} else {
		widen_rows(raw, w, B, T, T + 1, slot->wide, slot->wide + (size_t)B * T);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + (size_t)B * T;
	}
out:
	reader_unpin_shards(r);
	return ret;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct loader *l = r->l;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		struct loader_state st;
		int slot = ring_fill_slot(&l->ring);
		int ret;

		if (slot < 0 || l->reader_paused) {
			pthread_cond_wait(&l->fill_cond, &l->lock);
			continue;
		}
		/* Claim the slot and its batch; other readers claim the following ones. */
		st = l->fill_state;
		sampler_advance(&l->sampler, &l->fill_state);
		ring_claimed(&l->ring);
		l->nr_busy++;
		pthread_mutex_unlock(&l->lock);

		ret = stage_reclaim(l->stage, (uint32_t)slot);
		if (ret == 0)
			ret = fill_batch(r, (uint32_t)slot, &st);
		else
			snprintf(l->slots[slot].errmsg, sizeof(l->slots[slot].errmsg),
				"waiting for the copy to the GPU failed");
		if (ret < 0 && ret != -EINVAL && ret != -ENOMEM)
			ret = -EIO;
		l->slots[slot].state = st;
		l->slots[slot].err = ret;

		pthread_mutex_lock(&l->lock);
		l->nr_busy--;
		ring_complete(&l->ring, (uint32_t)slot);
		if (ret < 0)
			l->reader_paused = true;
		pthread_cond_broadcast(&l->ready_cond);
		/* The next window is read while this one is used (and the ring is full). */
		if (ret == 0 && l->sampler.shuffle && !l->stop)
			window_prefetch(r, st.epoch,
				sampler_window(&l->sampler,
					sampler_index(&l->sampler, st.position, l->cfg.batch - 1)));
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* ---- the public API ---- */

/* Readers: FERRY_LOADER_THREADS, else one per CPU up to 4; never more than the slots the
 * consumer does not hold. Filling (reads and widening) is per batch, so readers scale until
 * memory bandwidth or the CPUs run out. */
static uint32_t nr_readers(uint32_t nr_slots)
{
	const char *env = getenv("FERRY_LOADER_THREADS");
	long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);

	if (n > 4 && !env)
		n = 4;
	if (n > (long)nr_slots - 1)
		n = (long)nr_slots - 1;
	if (n > MAX_READERS)
		n = MAX_READERS;
	return n < 1 ? 1 : (uint32_t)n;
}

/* Descriptors: the dataset keeps ds.max_open shards open (an eighth of RLIMIT_NOFILE, at
 * most 128), shared among the readers so that their pins never exceed it; the fast path's
 * cache files take as many again at most, two fds per direct_fd slot of each reader. */
static void fd_budget(struct loader *l)
{
	uint32_t slots = l->ds.max_open / (2 * l->nr_readers);

	l->nr_dfds = slots < 1 ? 1 : slots > DIRECT_NR_FDS ? DIRECT_NR_FDS : slots;
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++) {
		uint32_t pins = l->ds.max_open / l->nr_readers;

		l->readers[i].max_pins = pins < 1 ? 1 : pins;
	}
}

static void choose_path(struct loader *l)
{
	const char *io = getenv("FERRY_LOADER_IO");
	enum read_path p;

	l->force_pread = io && strcmp(io, "pread") == 0;
	atomic_store(&l->nowait_ok, !(io && strcmp(io, "uring") == 0));
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		if (l->force_pread || read_uring_new(&r->uring, 64) < 0)
			r->uring = NULL;
	}
	p = l->readers[0].uring ? PATH_URING : PATH_PREAD;
	p = direct_choose_path(l, p);
	atomic_store(&l->path, p);
	if (l->cfg.verbose)
		loader_say(l,
			"%u shards, %llu samples, %s %u-byte tokens, read path %s, %u readers, "
			"staging %s",
			l->ds.nr_shards, (unsigned long long)l->ds.nr_samples,
			shard_format_name(l->ds.format), l->ds.token_bytes, path_names[p],
			l->nr_readers, stage_name());
	if (l->cfg.verbose && l->cfg.shuffle)
		loader_say(l,
			"shuffle: blocks of %llu samples, windows of %u blocks read whole by every "
			"rank (%zu bytes each, %d kept), %llu whole windows and a tail of %llu "
			"samples; an epoch is %llu samples (global batch %llu)",
			(unsigned long long)l->sampler.block_samples, l->sampler.window_blocks,
			l->window_bytes, NR_WINDOWS, (unsigned long long)l->sampler.nr_windows,
			(unsigned long long)l->sampler.tail_samples,
			(unsigned long long)l->sampler.used_samples,
			(unsigned long long)l->sampler.global_batch);
}

/* The shuffled order's block and window sizes, and what a window needs in memory. */
static int order_params(struct loader *l, char *err, size_t errlen)
{
	const struct dataset *ds = &l->ds;
	const uint64_t T = l->cfg.seq_len, w = ds->token_bytes;
	uint64_t S, G, samples, bytes, pieces, in_place;

	l->block_bytes = l->cfg.block_bytes ? l->cfg.block_bytes : LOADER_DEFAULT_BLOCK_BYTES;
	l->window_blocks =
		l->cfg.window_blocks ? l->cfg.window_blocks : LOADER_DEFAULT_WINDOW_BLOCKS;
	if (l->block_bytes > LOADER_MAX_BLOCK_BYTES) {
		snprintf(err, errlen, "block of %u bytes: want 1 to %u", l->block_bytes,
			LOADER_MAX_BLOCK_BYTES);
		return -EINVAL;
	}
	if (l->window_blocks > LOADER_MAX_WINDOW_BLOCKS) {
		snprintf(err, errlen, "window of %u blocks: want 1 to %u", l->window_blocks,
			LOADER_MAX_WINDOW_BLOCKS);
		return -EINVAL;
	}
	if (!l->cfg.shuffle)
		return 0;
	/* As sampler_init takes it. */
	S = l->block_bytes / (T * w);
	S = S ? S : 1;
	G = l->window_blocks;
	/* The largest window: a whole one, or the tail when there is no whole one. */
	samples = S * G;
	if (ds->nr_samples / (S * G) == 0)
		samples = ds->nr_samples;
	bytes = samples * (T + 1) * w;
	if (bytes > (4ull << 30)) {
		snprintf(err, errlen,
			"a shuffle window of %llu bytes is too large (block %u bytes, "
			"%u blocks)",
			(unsigned long long)bytes, l->block_bytes, l->window_blocks);
		return -EINVAL;
	}
	/* Each run splits where a shard ends; each piece holds a sample at least. */
	pieces = G + 1 + ds->nr_shards;
	if (pieces > samples)
		pieces = samples;
	l->max_pieces = (uint32_t)(pieces ? pieces : 1);
	/* Each piece may take 64 bytes of alignment, and each one read in place (at least
	 * DIRECT_MIN_BYTES long) a page of alignment and a block either side. */
	in_place = bytes / DIRECT_MIN_BYTES + 1;
	if (in_place > l->max_pieces)
		in_place = l->max_pieces;
	l->window_bytes = bytes + (size_t)l->max_pieces * 64 +
			  (in_place + 1) * (2 * DIRECT_BLOCK + DIRECT_ALIGN);
	return 0;
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
	if (cfg->global_batch % ((uint64_t)B * W) != 0) {
		snprintf(errbuf, errlen,
			"global batch %llu is not a multiple of batch %u x world size %u",
			(unsigned long long)cfg->global_batch, B, W);
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
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->ds_lock, NULL);
	pthread_mutex_init(&l->held_lock, NULL);
	pthread_cond_init(&l->fill_cond, NULL);
	pthread_cond_init(&l->window_cond, NULL);
	pthread_cond_init(&l->ready_cond, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&l->prefetch_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	l->cfg = *cfg;
	l->cfg.world_size = W;
	l->nr_slots = cfg->nr_buffers ? cfg->nr_buffers : 4;
	if (l->nr_slots > RING_MAX_SLOTS) {
		snprintf(errbuf, errlen, "%u buffers asked for; at most %u", l->nr_slots,
			RING_MAX_SLOTS);
		ret = -EINVAL;
		goto fail;
	}
	l->nr_readers = nr_readers(l->nr_slots);
	l->paths = strdup(cfg->paths ? cfg->paths : "");
	l->cfg.paths = l->paths;
	ret = -ENOMEM;
	if (!l->paths)
		goto nomem;
	ret = dataset_open(&l->ds, l->paths, cfg->format, T, errbuf, errlen);
	if (ret < 0)
		goto fail;
	/* Every header now, before the first batch: a bad shard is named at start, not hours
	 * in when the order reaches it. */
	ret = dataset_check_all(&l->ds, 8, errbuf, errlen);
	if (ret < 0)
		goto fail;
	ret = order_params(l, errbuf, errlen);
	if (ret < 0)
		goto fail;
	sampler_init(&l->sampler, l->ds.nr_samples, B, W, cfg->rank, cfg->seed, cfg->shuffle,
		l->block_bytes / ((uint64_t)T * l->ds.token_bytes), l->window_blocks,
		cfg->global_batch);
	if (l->sampler.steps_per_epoch == 0) {
		snprintf(errbuf, errlen,
			"%s: %llu samples of %u+1 tokens, fewer than one step "
			"needs (%llu: batch %u x world %u x micro-batches)",
			l->paths, (unsigned long long)l->ds.nr_samples, T,
			(unsigned long long)l->sampler.global_batch, B, W);
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
	l->readers = calloc(l->nr_readers, sizeof(*l->readers));
	if (!l->slots || !l->readers)
		goto nomem;
	fd_budget(l);
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		r->l = l;
		for (int k = 0; k < DIRECT_NR_FDS; k++)
			r->dfds[k].fd = r->dfds[k].buffered_fd = -1;
		r->max_ops = B > l->max_pieces ? B : l->max_pieces;
		r->ops = calloc(r->max_ops, sizeof(*r->ops));
		r->copies = calloc(r->max_ops, sizeof(*r->copies));
		r->op_shard = calloc(r->max_ops, sizeof(*r->op_shard));
		r->on_ferry = calloc(r->max_ops, sizeof(*r->on_ferry));
		r->pinned = calloc(r->max_pins, sizeof(*r->pinned));
		r->group = calloc(r->max_pins, sizeof(*r->group));
		r->runs = calloc(SAMPLER_MAX_RUNS(&l->sampler), sizeof(*r->runs));
		r->rows = calloc(B, sizeof(*r->rows));
		if (!r->ops || !r->copies || !r->op_shard || !r->on_ferry || !r->pinned ||
			!r->group || !r->runs || !r->rows)
			goto nomem;
	}
	for (int i = 0; l->sampler.shuffle && i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (posix_memalign((void **)&win->buf, DIRECT_ALIGN, l->window_bytes) != 0) {
			win->buf = NULL;
			goto nomem;
		}
		win->pieces = calloc(l->max_pieces, sizeof(*win->pieces));
		if (!win->pieces)
			goto nomem;
	}
	for (uint32_t i = 0; i < l->nr_slots; i++) {
		l->slots[i].wide = malloc((size_t)2 * B * T * sizeof(int32_t));
		if (!l->slots[i].wide)
			goto nomem;
	}
	choose_path(l);
	ret = direct_setup(l);
	if (ret < 0)
		goto nomem;
	ring_init(&l->ring, l->nr_slots);
	ret = prefetch_start(l);
	if (ret == -ENOMEM)
		goto nomem;
	if (ret < 0) {
		snprintf(errbuf, errlen, "cannot start the prefetch thread: %s", strerror(-ret));
		goto fail;
	}
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		ret = pthread_create(&l->readers[i].thread, NULL, reader_main, &l->readers[i]);
		if (ret != 0) {
			snprintf(errbuf, errlen, "cannot start a reader thread: %s", strerror(ret));
			ret = -ret;
			goto fail;
		}
		l->readers[i].started = true;
	}
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
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_broadcast(&l->fill_cond);
	pthread_cond_broadcast(&l->prefetch_cond);
	pthread_mutex_unlock(&l->lock);
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++)
		if (l->readers[i].started)
			pthread_join(l->readers[i].thread, NULL);
	prefetch_stop(l);
	stage_free(l->stage);
	for (uint32_t i = 0; l->slots && i < l->nr_slots; i++)
		free(l->slots[i].wide);
	free(l->slots);
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		free(r->ops);
		free(r->copies);
		free(r->op_shard);
		free(r->on_ferry);
		free(r->pinned);
		free(r->group);
		free(r->runs);
		free(r->rows);
		direct_reader_done(r);
		read_uring_free(r->uring);
	}
	free(l->readers);
	direct_done(l);
	for (int i = 0; i < NR_WINDOWS; i++) {
		free(l->windows[i].buf);
		free(l->windows[i].pieces);
	}
	dataset_done(&l->ds);
	pthread_cond_destroy(&l->fill_cond);
	pthread_cond_destroy(&l->window_cond);
	pthread_cond_destroy(&l->ready_cond);
	pthread_cond_destroy(&l->prefetch_cond);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->ds_lock);
	pthread_mutex_destroy(&l->held_lock);
	free(l->paths);
	free(l);
}

/* The consumer's data wait over an epoch; under verbose, one line at the end of each: the
 * wait, and how far ahead the daemon was told of the order (prefetch.c). */
static void epoch_account(struct loader *l, double wait_ms, const struct loader_state *st)
{
	struct loader_prefetch_info pi;

	l->epoch_batches++;
	l->epoch_wait_ms += wait_ms;
	if (st->position + 1 < l->sampler.steps_per_epoch)
		return;
	if (l->cfg.verbose) {
		char ahead[128] = "prefetch off";

		loader_get_prefetch(l, &pi);
		if (pi.on)
			snprintf(ahead, sizeof(ahead),
				"prefetch %llu batches ahead of %llu asked (%llu calls, %llu "
				"stopped by the daemon's bound)",
				(unsigned long long)pi.ahead, (unsigned long long)pi.horizon,
				(unsigned long long)pi.nr_calls, (unsigned long long)pi.nr_bound);
		loader_say(l,
			"epoch %llu: %llu batches, data wait %.1f ms (%.3f ms a batch), %s; %llu "
			"batches read a row at a time so far",
			(unsigned long long)st->epoch, (unsigned long long)l->epoch_batches,
			l->epoch_wait_ms, l->epoch_wait_ms / (double)l->epoch_batches, ahead,
			(unsigned long long)atomic_load(&l->nr_rows_alone));
	}
	l->epoch_batches = 0;
	l->epoch_wait_ms = 0;
}

int loader_next_batch(struct loader *l, struct loader_batch *b)
{
	struct loader_slot *slot;
	double t0 = loader_now_ms();
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
	pthread_cond_broadcast(&l->fill_cond);
	while ((s = ring_take_slot(&l->ring)) < 0)
		pthread_cond_wait(&l->ready_cond, &l->lock);
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
	pthread_cond_signal(&l->prefetch_cond);
	pthread_mutex_unlock(&l->lock);

	b->wait_ms = loader_now_ms() - t0;
	epoch_account(l, b->wait_ms, &slot->state);
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
	if (st->position >= l->sampler.steps_per_epoch) {
		snprintf(l->last_error, sizeof(l->last_error),
			"%s: position %llu is past the %llu "
			"steps of an epoch",
			l->paths, (unsigned long long)st->position,
			(unsigned long long)l->sampler.steps_per_epoch);
		return -EINVAL;
	}
	pthread_mutex_lock(&l->lock);
	while (l->nr_busy)
		pthread_cond_wait(&l->ready_cond, &l->lock);
	ring_release_all(&l->ring);
	ring_reset(&l->ring);
	l->fill_state = *st;
	l->next_state = *st;
	l->reader_paused = false;
	l->sticky_err = 0;
	l->prefetch_gen++;
	l->epoch_batches = 0;
	l->epoch_wait_ms = 0;
	pthread_cond_broadcast(&l->fill_cond);
	pthread_cond_signal(&l->prefetch_cond);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

int32_t *loader_swap_batch_buffer(struct loader *l, int32_t *spare)
{
	struct loader_slot *slot;
	int32_t *held;

	/* No lock, as the consumer's own: taken and released are written only by the consumer
	 * (this thread), and the slot of its last batch, (taken - 1) % nr, is its own from its
	 * take to its next call. No reader touches that slot meanwhile; the one that fills it
	 * next claims it after the release, under the lock that orders this write before its
	 * read of wide. */
	if (l->ring.released == l->ring.taken)
		return NULL;
	slot = &l->slots[(l->ring.taken - 1) % l->ring.nr];
	if (slot->err)
		return NULL;
	held = slot->wide;
	slot->wide = spare;
	return held;
}

uint64_t loader_steps_per_epoch(const struct loader *l)
{
	return l->sampler.steps_per_epoch;
}

uint32_t loader_vocab_size(const struct loader *l)
{
	return l->ds.vocab;
}

void loader_get_order(const struct loader *l, uint32_t *block_bytes, uint32_t *window_blocks)
{
	*block_bytes = l->block_bytes;
	*window_blocks = l->window_blocks;
}

const char *read_path_name(enum read_path p)
{
	return path_names[p];
}

const char *loader_path_name(const struct loader *l)
{
	return read_path_name(atomic_load(&((struct loader *)l)->path));
}

const char *loader_last_error(const struct loader *l)
{
	return l->last_error;
}

uint32_t loader_declared_vocab(const struct loader *l)
{
	return l->ds.declared_vocab;
}

int loader_shard_files(const struct loader *l, uint32_t i, const char **path, const char **idx_path)
{
	if (i >= l->ds.nr_shards)
		return -ENOENT;
	*path = l->ds.shards[i].path;
	*idx_path = l->ds.shards[i].idx_path;
	return 0;
}

void loader_token_source(const struct loader *l, const struct loader_state *st, uint32_t j,
	uint32_t k, const char **path, uint64_t *index)
{
	uint64_t g = sampler_sample(&l->sampler, st->epoch, st->position, j);
	const struct shard *sh = &l->ds.shards[dataset_find(&l->ds, g)];

	*path = sh->path;
	*index = (g - sh->first_sample) * l->cfg.seq_len + k;
}
