/* The fetch engine: a read of an object range becomes chunk acquisitions from the cache; the
 * misses become ranged GETs on one libcurl multi handle driven by one thread (fetch_curl.c:
 * connection reuse, up to max_transfers in flight, retries with jittered backoff), or reads by
 * worker threads for backends without HTTP. The curl thread never touches the disk: a finished
 * chunk goes back to the reader that asked for it (which stores it and copies from memory) or,
 * for readahead, to a worker, so one slow disk write never stalls the other transfers. A
 * readahead chunk that arrived is landed in the cache's flight record (cache_chunk_land): until
 * a worker has stored it, readers copy from its buffer (cache_chunk_acquire_copy) and never
 * wait for that write.
 * Measured (cold dd of 2 GiB, 1 MiB readahead, 2 shared cores, 4 runs alternated): 651-794
 * MB/s against 559-634 MB/s when readers waited for the store. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/cache.h"
#include "fs/fetch.h"
#include "fs/fetch_i.h"
#include "fs/log.h"
#include "fs/namespace.h"
#include "fs/remote/net.h"
#include "fs/remote/remote.h"
#include "fs/tier.h"

/* With HTTP the workers only store readahead chunks (page-cache copies). Measured on 2 shared
 * cores, cold dd of 2 GiB through a fresh mount, 3 runs each: 1 storer 920-980 MB/s, 2 storers
 * 790-850, 4 storers 730-880: parallel stores take CPU from the curl thread and finish the
 * chunk the reader waits for later, where one stores them in the order they arrived. */
#define FETCH_STORERS 1
/* Readahead in memory at once (queued, in flight, or waiting for its store; at least 2
 * chunks): the FUSE side asks for 128 MiB ahead. Counting only the chunks that waited for their
 * store (up to 2 x max_transfers) let the daemon of a cold dd of 2 GiB in 8 MiB chunks peak at
 * 344-388 MiB of RSS (VmHWM), as queued readahead held buffers too; with this bound, 247 MiB,
 * and cold reads of 512 MiB as fast as before (0.52, 0.68 of the wire against 0.48, 0.71,
 * alternated runs on 2 loaded cores). */
#define FETCH_AHEAD_BYTES (128ull << 20)
/* Bytes of chunks queued for the disk-ahead thread at most (two of the FUSE side's 128 MiB
 * windows); beyond, the hint is dropped (a reader still reads them, only without a head
 * start). */
#define DISK_AHEAD_BYTES (256ull << 20)
/* Reads of one chunk from the cache that may fail their checksum before a read gives up. */
#define FETCH_MAX_BAD_READS 3

uint64_t fetch_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char *buf_get(struct fetcher *f)
{
	char *b = NULL;

	pthread_mutex_lock(&f->lock);
	if (f->nr_bufs)
		b = f->bufs[--f->nr_bufs];
	pthread_mutex_unlock(&f->lock);
	return b ? b : malloc(f->chunk_bytes);
}

static void buf_put(struct fetcher *f, char *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&f->lock);
	if (f->nr_bufs < f->max_bufs) {
		f->bufs[f->nr_bufs++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&f->lock);
	free(b);
}

static void job_free(struct fetcher *f, struct fetch_job *j)
{
	if (!j)
		return;
	if (j->len < f->chunk_bytes)
		free(j->buf);
	else
		buf_put(f, j->buf);
	cache_object_unref(j->co);
	free(j);
	atomic_fetch_sub_explicit(&f->nr_jobs, 1, memory_order_relaxed);
}

static struct fetch_job *job_new(struct fetcher *f, struct cache_object *co, uint64_t idx,
	struct fetch_batch *batch)
{
	struct fetch_job *j = calloc(1, sizeof(*j));
	const struct remote_object *obj = cache_object_remote(co);
	uint64_t off = idx * f->chunk_bytes;

	if (!j)
		return NULL;
	j->len = obj->size - off < f->chunk_bytes ? (size_t)(obj->size - off) : f->chunk_bytes;
	/* A short last chunk (all of a small file) gets a buffer of its size: the pool's are a
	 * chunk each, and a walk of small files fetched ahead would outgrow the pool. */
	j->buf = j->len < f->chunk_bytes ? malloc(j->len) : buf_get(f);
	if (!j->buf) {
		free(j);
		return NULL;
	}
	j->obj = obj;
	j->co = cache_object_ref(co);
	j->idx = idx;
	j->off = off;
	j->batch = batch;
	j->f = f;
	j->read_job = !f->r->ops->http;
	atomic_fetch_add_explicit(&f->nr_jobs, 1, memory_order_relaxed);
	return j;
}

/* A job is done (j->err set): to its reader, or to a worker to store. */
void fetch_job_deliver(struct fetcher *f, struct fetch_job *j)
{
	struct fetch_batch *b = j->batch;

	if (j->err)
		atomic_fetch_add(&f->errors, 1);
	if (b) {
		pthread_mutex_lock(&b->lock);
		j->next = b->done;
		b->done = j;
		b->pending--;
		pthread_cond_signal(&b->cond);
		pthread_mutex_unlock(&b->lock);
		return;
	}
	/* Readers waiting for this chunk copy it from here while it waits for its store. Landed
	 * before the job is queued: once queued, a worker may store it and free the buffer. */
	if (!j->err)
		cache_chunk_land(j->co, j->idx, j->buf, j->len);
	pthread_mutex_lock(&f->lock);
	j->next = NULL;
	*f->work_tail = j;
	f->work_tail = &j->next;
	pthread_cond_signal(&f->work_cond);
	pthread_mutex_unlock(&f->lock);
}

/* Stores a fetched chunk (or reports its failure) in the cache. Returns true when the chunk is
 * now present and pinned by the caller. */
static bool job_store(struct fetch_job *j)
{
	int ret;

	if (j->err) {
		cache_chunk_fail(j->co, j->idx, j->err);
		return false;
	}
	ret = cache_chunk_fill(j->co, j->idx, j->buf, j->len);
	if (ret) {
		/* The chunk stays absent and its waiters fetch it again; the bytes in hand are
		 * still right for the reader that asked. A degraded cache (-EROFS) said so once
		 * already. */
		log_msg(ret == -EROFS ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN,
			"cache: cannot store chunk %llu of '%s': %s", (unsigned long long)j->idx,
			j->obj->path, strerror(-ret));
		return false;
	}
	return true;
}

/* The tier's name for chunk j->idx of j's object; version is room for the mtime as text. */
static void tier_id_of(struct fetcher *f, const struct fetch_job *j, struct tier_chunk_id *id,
	char *version, size_t version_len)
{
	const struct remote_object *obj = j->obj;

	/* the cache's version name (namespace.c version_of): the ETag, else the mtime */
	if (!obj->etag)
		snprintf(version, version_len, "%lld.%09ld", (long long)obj->mtime.tv_sec,
			obj->mtime.tv_nsec);
	*id = (struct tier_chunk_id){
		.source_id = tier_source_id(f->tier),
		.path = obj->path,
		.version = obj->etag ? obj->etag : version,
		.idx = j->idx,
		.off = j->off,
		.len = j->len,
	};
}

static void submit(struct fetcher *f, struct fetch_job *j);

/* A tier GET thread's answer: a verified hit is done; anything else goes to the origin. */
static void tier_got(void *arg, int result)
{
	struct fetch_job *j = arg;

	if (!result) {
		j->err = 0;
		j->got = j->len;
		j->from_tier = true;
		fetch_job_deliver(j->f, j);
		return;
	}
	j->got = 0; /* what a rejected object left in the buffer is overwritten */
	submit(j->f, j);
}

/* Hands the bytes the origin sent for j to the tier's PUT queue: a copy, or, with the queue
 * full, the chunk's name when this node's cache holds it (stored), read back later. */
static void put_to_tier(struct fetcher *f, struct fetch_job *j, bool stored)
{
	struct tier_chunk_id id;
	char version[64];

	if (!f->tier || j->err || j->from_tier)
		return;
	tier_id_of(f, j, &id, version, sizeof(version));
	tier_put(f->tier, &id, j->buf, stored ? j->co : NULL);
}

static void tier_hold(void *handle)
{
	cache_object_ref(handle);
}

static void tier_release(void *handle)
{
	cache_object_unref(handle);
}

/* A chunk whose tier PUT waited is read back from this node's cache, verified as every read
 * from it is, if it is still there. */
static int tier_reload(void *handle, const struct tier_chunk_id *id, void *buf)
{
	struct cache_object *co = handle;
	ssize_t n;
	int ret = cache_chunk_pin(co, id->idx);

	if (ret)
		return ret;
	n = cache_object_read(co, buf, (size_t)id->len, id->off);
	cache_chunk_release(co, id->idx);
	return n == (ssize_t)id->len ? 0 : n < 0 ? (int)n : -EIO;
}

/* Queues j for the tier's GET threads (once), a worker (a read job) or the curl thread. Once
 * queued, j may be done and freed at any moment: nothing of it is read after the unlock. */
static void submit(struct fetcher *f, struct fetch_job *j)
{
	bool to_curl = !j->read_job;

	if (f->tier && !j->tier_tried) {
		struct tier_chunk_id id;
		char version[64];

		j->tier_tried = true;
		tier_id_of(f, j, &id, version, sizeof(version));
		if (!tier_get(f->tier, &id, j->buf, tier_got, j))
			return;
	}

	pthread_mutex_lock(&f->lock);
	j->next = NULL;
	if (to_curl) {
		*f->queue_tail = j;
		f->queue_tail = &j->next;
	} else {
		*f->work_tail = j;
		f->work_tail = &j->next;
		pthread_cond_signal(&f->work_cond);
	}
	pthread_mutex_unlock(&f->lock);
	if (to_curl)
		fetch_curl_wake(f);
}

/* --- workers: reads of non-HTTP backends, and storing readahead chunks --- */

static void *worker_main(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct fetch_job *j;
		bool stored;

		pthread_mutex_lock(&f->lock);
		while (!f->work && !f->stop_workers)
			pthread_cond_wait(&f->work_cond, &f->lock);
		j = f->work;
		if (j) {
			f->work = j->next;
			if (!f->work)
				f->work_tail = &f->work;
		}
		pthread_mutex_unlock(&f->lock);
		if (!j)
			break;
		if (j->read_job) {
			uint64_t t0 = fetch_now_ns(), ns;
			ssize_t n;

			j->read_job = false;
			atomic_fetch_add(&f->requests, 1);
			n = f->r->ops->read(f->r, j->obj, j->buf, j->len, j->off);
			ns = fetch_now_ns() - t0;
			if (n == (ssize_t)j->len) {
				j->err = 0;
				j->got = j->len;
				atomic_fetch_add(&f->bytes_fetched, j->len);
				atomic_fetch_add(&f->fetch_ns, ns);
			} else {
				j->err = n == -ESTALE ? -ESTALE : -EIO;
			}
			fetch_count_request(f, ns,
				!j->err             ? NET_OK
				: j->err == -ESTALE ? NET_CHANGED
						    : FETCH_ERR_IO);
			if (j->batch) {
				fetch_job_deliver(f, j);
				continue;
			}
			if (j->err)
				atomic_fetch_add(&f->errors, 1);
		}
		stored = job_store(j);
		put_to_tier(f, j, stored);
		if (stored)
			cache_chunk_release(j->co, j->idx);
		pthread_mutex_lock(&f->lock);
		f->ahead_bytes -= j->len;
		pthread_mutex_unlock(&f->lock);
		job_free(f, j);
	}
	return NULL;
}

/* --- disk readahead: present chunks of a sequential reader, read into the page cache --- */

/* A sequential reader of chunks already in the cache, after drop_caches (or once the page
 * cache let them go), otherwise reads the data file one FUSE request at a time: the disk
 * idles while the daemon checks and replies, and the kernel's own readahead of the data file
 * does not cover it (the reads come from several threads, through io_uring). This thread asks
 * for the next chunks (POSIX_FADV_WILLNEED) ahead of the reader, in the order asked. It is a
 * thread of its own because the advice blocks while it queues a chunk's reads: taken on the
 * reader's thread it was slower than none (cache_object_read). Every byte served is still
 * read and checked by cache_object_read.
 * Measured (1 GiB, dd bs=1M after drop_caches, 2 cores at load 4-6 from other builds): 133 MiB
 * of the data file resident 0.1 s after a 4 MiB read, against 14 MiB without (the test
 * sequential_reader_of_cached_file_reads_disk_ahead); wall clock 698-1300 MB/s against
 * 472-930 without in 5 alternated pairs, but 0.75 against 0.74 of the dd of the data file in
 * one bench_http run each: within the noise there. What holds the row under 0.95 here is CPU,
 * not the disk: a fresh mount over a data file wholly in the page cache ran 1.4-1.6 GB/s, no
 * faster than after drop_caches, as each byte costs three copies (data file to the reply
 * buffer, reply to the mount's page cache, to the reader) and a hash, against dd's one. */
static void *disk_ahead_main(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct disk_ahead *d;

		pthread_mutex_lock(&f->lock);
		while (!f->disk_queue && !f->stop_disk)
			pthread_cond_wait(&f->disk_cond, &f->lock);
		d = f->disk_queue;
		if (d) {
			f->disk_queue = d->next;
			if (!f->disk_queue)
				f->disk_tail = &f->disk_queue;
			f->nr_disk_queued--;
		}
		pthread_mutex_unlock(&f->lock);
		if (!d)
			break;
		cache_object_readahead(d->co, d->idx);
		cache_object_unref(d->co);
		free(d);
	}
	return NULL;
}

/* Queues chunk idx of co for the disk-ahead thread; drops the hint when the queue is full. */
static void disk_ahead(struct fetcher *f, struct cache_object *co, uint64_t idx)
{
	struct disk_ahead *d;

	if (!f->have_disk_thread)
		return;
	d = malloc(sizeof(*d));
	if (!d)
		return;
	d->next = NULL;
	d->idx = idx;
	d->co = cache_object_ref(co);
	pthread_mutex_lock(&f->lock);
	if ((uint64_t)f->nr_disk_queued * f->chunk_bytes >= DISK_AHEAD_BYTES || f->stop_disk) {
		pthread_mutex_unlock(&f->lock);
		cache_object_unref(d->co);
		free(d);
		return;
	}
	*f->disk_tail = d;
	f->disk_tail = &d->next;
	f->nr_disk_queued++;
	pthread_cond_signal(&f->disk_cond);
	pthread_mutex_unlock(&f->lock);
}

static void disk_ahead_stop(struct fetcher *f)
{
	struct disk_ahead *d;

	if (!f->have_disk_thread)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop_disk = true;
	d = f->disk_queue;
	f->disk_queue = NULL;
	f->disk_tail = &f->disk_queue;
	f->nr_disk_queued = 0;
	pthread_cond_broadcast(&f->disk_cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->disk_thread, NULL);
	f->have_disk_thread = false;
	while (d) {
		struct disk_ahead *next = d->next;

		cache_object_unref(d->co);
		free(d);
		d = next;
	}
}

/* --- the public calls --- */

int fetcher_new(struct fetcher **out, struct remote *r, struct cache *c,
	const struct fetch_config *cfg)
{
	struct fetcher *f;
	unsigned i, nr_workers;
	int ret;

	*out = NULL;
	if (!r || !c || (!r->ops->http && !r->ops->read)) {
		tier_free(cfg ? cfg->tier : NULL);
		return -EINVAL;
	}
	if (r->ops->http && net_global_init()) {
		tier_free(cfg ? cfg->tier : NULL);
		return -EIO;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		tier_free(cfg ? cfg->tier : NULL);
		return -ENOMEM;
	}
	f->tier = cfg ? cfg->tier : NULL;
	tier_set_reload(f->tier, &(struct tier_reload){
					 .hold = tier_hold,
					 .release = tier_release,
					 .read = tier_reload,
				 });
	f->r = r;
	f->c = c;
	f->chunk_bytes = cache_chunk_bytes(c);
	f->max_transfers = cfg && cfg->max_transfers ? cfg->max_transfers : 16;
	f->max_retries = cfg && cfg->max_retries ? cfg->max_retries : 5;
	f->backoff_ms = cfg && cfg->backoff_ms ? cfg->backoff_ms : 100;
	f->queue_tail = &f->queue;
	f->work_tail = &f->work;
	f->disk_tail = &f->disk_queue;
	f->max_bufs = f->max_transfers + FETCH_WORKERS;
	f->max_ahead_bytes = FETCH_AHEAD_BYTES;
	metrics_histogram_init(&f->request_latency, METRICS_LATENCY_ORIGIN_REQUEST);
	if (f->max_ahead_bytes < 2ull * f->chunk_bytes)
		f->max_ahead_bytes = 2ull * f->chunk_bytes;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->work_cond, NULL);
	pthread_cond_init(&f->disk_cond, NULL);
	ret = -ENOMEM;
	f->bufs = calloc(f->max_bufs, sizeof(*f->bufs));
	if (!f->bufs)
		goto err;
	if (r->ops->http) {
		ret = fetch_curl_start(f);
		if (ret)
			goto err;
	}
	nr_workers = r->ops->http ? FETCH_STORERS : FETCH_WORKERS;
	for (i = 0; i < nr_workers; i++) {
		ret = -pthread_create(&f->workers[i], NULL, worker_main, f);
		if (ret)
			goto err;
		f->nr_workers++;
	}
	ret = -pthread_create(&f->disk_thread, NULL, disk_ahead_main, f);
	if (ret)
		goto err;
	f->have_disk_thread = true;
	*out = f;
	return 0;
err:
	fetcher_free(f);
	return ret;
}

void fetcher_free(struct fetcher *f)
{
	unsigned i;

	if (!f)
		return;
	/* The tier's threads first: they hand their jobs to the origin, so the curl thread and
	 * the workers must still be there to fail them. The workers still hand it chunks (to
	 * drop) until they stop: it is freed after them. */
	tier_stop(f->tier);
	disk_ahead_stop(f);
	fetch_curl_stop(f);
	pthread_mutex_lock(&f->lock);
	f->stop_workers = true;
	pthread_cond_broadcast(&f->work_cond);
	pthread_mutex_unlock(&f->lock);
	for (i = 0; i < f->nr_workers; i++)
		pthread_join(f->workers[i], NULL);
	fetch_curl_free(f);
	tier_free(f->tier);
	for (i = 0; i < f->nr_bufs; i++)
		free(f->bufs[i]);
	free(f->bufs);
	pthread_cond_destroy(&f->work_cond);
	pthread_cond_destroy(&f->disk_cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void fetcher_abort(struct fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->aborted = true;
	pthread_mutex_unlock(&f->lock);
	fetch_curl_wake(f);
	/* after aborted is set: the jobs it hands back to the origin fail at once */
	tier_abort(f->tier);
}

struct tier *fetcher_tier(struct fetcher *f)
{
	return f ? f->tier : NULL;
}

void fetcher_get_stats(struct fetcher *f, struct fetch_stats *st)
{
	st->bytes_fetched = atomic_load(&f->bytes_fetched);
	st->requests = atomic_load(&f->requests);
	st->retries = atomic_load(&f->retries);
	st->errors = atomic_load(&f->errors);
	st->fetch_ns = atomic_load(&f->fetch_ns);
	st->cache_read_bytes = atomic_load_explicit(&f->cache_read_bytes, memory_order_relaxed);
	st->chunks_in_flight = atomic_load_explicit(&f->nr_jobs, memory_order_relaxed);
}

const char *fetch_error_class_name(unsigned cls)
{
	static const char *const names[FETCH_NR_ERROR_CLASSES] = {
		[NET_TIMEOUT] = "timeout",
		[NET_RESET] = "reset",
		[NET_RESOLVE] = "resolve",
		[NET_CONNECT] = "connect",
		[NET_TLS] = "tls",
		[NET_HTTP_4XX] = "http_4xx",
		[NET_HTTP_403] = "http_403",
		[NET_HTTP_404] = "http_404",
		[NET_HTTP_412] = "http_412",
		[NET_HTTP_416] = "http_416",
		[NET_HTTP_429] = "http_429",
		[NET_HTTP_5XX] = "http_5xx",
		[NET_SHORT_BODY] = "short_body",
		[NET_BAD_RESPONSE] = "bad_response",
		[NET_CHANGED] = "changed",
		[NET_OTHER] = "other",
		[FETCH_ERR_IO] = "io",
	};
	_Static_assert(FETCH_ERR_IO + 1 == FETCH_NR_ERROR_CLASSES,
		"a class of enum net_error has no label");

	return cls < FETCH_NR_ERROR_CLASSES ? names[cls] : NULL;
}

uint64_t fetcher_nr_errors_of_class(struct fetcher *f, unsigned cls)
{
	if (cls >= FETCH_NR_ERROR_CLASSES)
		return 0;
	return atomic_load_explicit(&f->error_classes[cls], memory_order_relaxed);
}

const struct metrics_histogram *fetcher_request_latency(struct fetcher *f)
{
	return &f->request_latency;
}

enum { CH_HIT, CH_MINE, CH_WAIT, CH_DONE };

/* The part [*a, *b) of chunk idx that falls in [off, off+len). */
static void chunk_part(struct fetcher *f, uint64_t off, size_t len, uint64_t idx, uint64_t *a,
	uint64_t *b)
{
	uint64_t cs = idx * f->chunk_bytes;

	*a = off > cs ? off : cs;
	*b = off + len < cs + f->chunk_bytes ? off + len : cs + f->chunk_bytes;
}

/* Copies the part of chunk idx that falls in [off, off+len) from src (the chunk's bytes). */
static void copy_part(struct fetcher *f, char *buf, uint64_t off, size_t len, uint64_t idx,
	const char *src)
{
	uint64_t a, b;

	chunk_part(f, off, len, idx, &a, &b);
	memcpy(buf + (a - off), src + (a - idx * f->chunk_bytes), (size_t)(b - a));
}

/* Reads the part of a present, pinned chunk that falls in the range, then unpins it.
 * -EBADMSG: the bytes on disk failed their checksum and the cache dropped the chunk; the
 * caller fetches it again. */
static int read_hit(struct fetcher *f, struct cache_object *co, char *buf, uint64_t off, size_t len,
	uint64_t idx)
{
	uint64_t a, b;
	ssize_t n = 0;

	chunk_part(f, off, len, idx, &a, &b);
	if (buf)
		n = cache_object_read(co, buf + (a - off), (size_t)(b - a), a);
	cache_chunk_release(co, idx);
	if (buf && n != (ssize_t)(b - a))
		return n < 0 ? (int)n : -EIO;
	if (buf)
		atomic_fetch_add_explicit(&f->cache_read_bytes, (uint64_t)n, memory_order_relaxed);
	return 0;
}

/* Takes in the finished jobs of a batch until none is pending: stores each in the cache and
 * copies its part into buf (when buf). Returns the first error. */
static int drain(struct fetcher *f, struct fetch_batch *b, char *buf, uint64_t off, size_t len)
{
	int err = 0;

	pthread_mutex_lock(&b->lock);
	for (;;) {
		struct fetch_job *j = b->done;
		bool stored;

		if (!j) {
			if (!b->pending)
				break;
			pthread_cond_wait(&b->cond, &b->lock);
			continue;
		}
		b->done = j->next;
		pthread_mutex_unlock(&b->lock);
		if (!j->err && buf)
			copy_part(f, buf, off, len, j->idx, j->buf);
		if (j->err && !err)
			err = j->err;
		stored = !j->uncached && job_store(j);
		put_to_tier(f, j, stored);
		if (stored)
			cache_chunk_release(j->co, j->idx);
		job_free(f, j);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return err;
}

/* Fetches chunk idx for one reader into memory, outside the cache's single flight, and
 * copies its part of [off, off+len) into buf. */
static int fetch_uncached(struct fetcher *f, struct cache_object *co, struct fetch_batch *b,
	char *buf, uint64_t off, size_t len, uint64_t idx)
{
	struct fetch_job *j = job_new(f, co, idx, b);

	if (!j)
		return -ENOMEM;
	j->uncached = true;
	pthread_mutex_lock(&b->lock);
	b->pending++;
	pthread_mutex_unlock(&b->lock);
	submit(f, j);
	return drain(f, b, buf, off, len);
}

/* Waits for chunk idx, which another thread fetches: a reader (buf set) copies its part from
 * the fetcher's buffer as soon as the bytes land, without waiting for their store. Returns as
 * cache_chunk_acquire_copy (cache_chunk_acquire without buf). */
static int wait_chunk(struct fetcher *f, struct cache_object *co, char *buf, uint64_t off,
	size_t len, uint64_t idx)
{
	uint64_t a, b;

	if (!buf)
		return cache_chunk_acquire(co, idx, true);
	chunk_part(f, off, len, idx, &a, &b);
	return cache_chunk_acquire_copy(co, idx, buf + (a - off), a, (size_t)(b - a));
}

/* Makes chunks [first, last] present, copying [off, off+len) into buf when buf is set. */
static int do_window(struct fetcher *f, struct cache_object *co, char *buf, uint64_t off,
	size_t len, uint64_t first, uint64_t last)
{
	unsigned nr = (unsigned)(last - first + 1), i;
	struct fetch_batch b = { .lock = PTHREAD_MUTEX_INITIALIZER,
		.cond = PTHREAD_COND_INITIALIZER };
	unsigned char *state = calloc(nr, 1);
	int err = 0, ret;

	if (!state)
		return -ENOMEM;
	/* Take every chunk without waiting, so that all misses go out at once. */
	for (i = 0; i < nr; i++) {
		ret = cache_chunk_acquire(co, first + i, false);
		if (ret == CACHE_HIT) {
			state[i] = CH_HIT;
		} else if (ret == CACHE_FETCH) {
			struct fetch_job *j = job_new(f, co, first + i, &b);

			if (!j) {
				cache_chunk_fail(co, first + i, -ENOMEM);
				err = err ? err : -ENOMEM;
				state[i] = CH_DONE;
				continue;
			}
			state[i] = CH_MINE;
			pthread_mutex_lock(&b.lock);
			b.pending++;
			pthread_mutex_unlock(&b.lock);
			submit(f, j);
		} else if (ret == -EAGAIN) {
			state[i] = CH_WAIT;
		} else {
			err = err ? err : ret;
			state[i] = CH_DONE;
		}
	}
	/* Hits are read while the misses are on the wire. A hit that fails its checksum was
	 * dropped: it is taken again below, as a chunk someone else fetches. */
	for (i = 0; i < nr; i++) {
		if (state[i] != CH_HIT)
			continue;
		ret = read_hit(f, co, buf, off, len, first + i);
		if (ret == -EBADMSG) {
			state[i] = CH_WAIT;
			continue;
		}
		err = err ? err : ret;
	}
	/* Our own chunks are stored before we wait for anyone else's: a reader waiting for a
	 * chunk we fetch must never wait on us while we wait on it. */
	ret = drain(f, &b, buf, off, len);
	err = err ? err : ret;
	for (i = 0; i < nr; i++) {
		unsigned nr_bad = 0;

		if (state[i] != CH_WAIT)
			continue;
		for (;;) {
			ret = wait_chunk(f, co, buf, off, len, first + i);
			if (ret == CACHE_COPIED) {
				ret = 0;
				break;
			}
			if (ret == CACHE_HIT) {
				ret = read_hit(f, co, buf, off, len, first + i);
				/* Dropped again: a disk that keeps damaging what it stores (or
				 * fails to read it back) gets no more tries; the chunk is
				 * fetched for this reader alone, and the read still succeeds. */
				if (ret == -EBADMSG && ++nr_bad < FETCH_MAX_BAD_READS)
					continue;
				if (ret == -EBADMSG)
					ret = fetch_uncached(f, co, &b, buf, off, len, first + i);
			} else if (ret == CACHE_FETCH) {
				/* the other fetcher's store failed: we fetch it ourselves */
				struct fetch_job *j = job_new(f, co, first + i, &b);

				if (!j) {
					cache_chunk_fail(co, first + i, -ENOMEM);
					ret = -ENOMEM;
					break;
				}
				pthread_mutex_lock(&b.lock);
				b.pending++;
				pthread_mutex_unlock(&b.lock);
				submit(f, j);
				ret = drain(f, &b, buf, off, len);
			}
			break;
		}
		err = err ? err : ret;
	}
	free(state);
	pthread_mutex_destroy(&b.lock);
	pthread_cond_destroy(&b.cond);
	return err;
}

static int do_range(struct fetcher *f, struct cache_object *co, char *buf, uint64_t off, size_t len)
{
	uint64_t first, last, window = f->max_transfers * 2, w;
	int ret;

	if (len == 0)
		return 0;
	first = off / f->chunk_bytes;
	last = (off + len - 1) / f->chunk_bytes;
	/* At most a window of chunks at once: bounds the memory in flight and the chunks pinned. */
	for (w = first; w <= last; w += window) {
		uint64_t we = w + window - 1 < last ? w + window - 1 : last;
		uint64_t a = w * f->chunk_bytes > off ? w * f->chunk_bytes : off;
		uint64_t b = (we + 1) * f->chunk_bytes < off + len ? (we + 1) * f->chunk_bytes
								   : off + len;

		ret = do_window(f, co, buf ? buf + (a - off) : NULL, a, (size_t)(b - a), w, we);
		if (ret)
			return ret;
	}
	return 0;
}

ssize_t fetcher_read(struct fetcher *f, struct cache_object *co, void *buf, size_t len,
	uint64_t off)
{
	const struct remote_object *obj = cache_object_remote(co);
	int ret;

	if (off >= obj->size)
		return 0;
	if (len > obj->size - off)
		len = (size_t)(obj->size - off);
	ret = do_range(f, co, buf, off, len);
	return ret ? ret : (ssize_t)len;
}

int fetcher_make_resident(struct fetcher *f, struct cache_object *co, uint64_t off, uint64_t len)
{
	const struct remote_object *obj = cache_object_remote(co);

	if (off >= obj->size)
		return 0;
	if (len > obj->size - off)
		len = obj->size - off;
	return do_range(f, co, NULL, off, (size_t)len);
}

/* Readahead chunks hold memory from submission until stored: their bytes are taken before a
 * chunk is acquired (so threads prefetching at once cannot pass the bound together) and given
 * back unless a job keeps them (worker_main gives them back once the job is done). Counted in
 * bytes, not chunks: a small file's job holds a buffer of its size (job_new), and counting it
 * as a chunk let a directory walk's 32 small files (a few MiB) fill a bound of 16 chunks
 * whenever the store lagged, turning the rest of the walk's readahead away. */
static bool take_ahead(struct fetcher *f, uint64_t len)
{
	bool took;

	pthread_mutex_lock(&f->lock);
	took = f->ahead_bytes + len <= f->max_ahead_bytes;
	if (took)
		f->ahead_bytes += len;
	pthread_mutex_unlock(&f->lock);
	return took;
}

static void give_ahead(struct fetcher *f, uint64_t len)
{
	pthread_mutex_lock(&f->lock);
	f->ahead_bytes -= len;
	pthread_mutex_unlock(&f->lock);
}

static unsigned prefetch(struct fetcher *f, struct cache_object *co, uint64_t first, uint64_t n,
	uint64_t *next, bool from_disk)
{
	uint64_t nr_chunks = cache_object_nr_chunks(co), size = cache_object_size(co), idx;
	unsigned started = 0;

	for (idx = first; idx < first + n && idx < nr_chunks; idx++) {
		uint64_t off = idx * f->chunk_bytes;
		uint64_t len = size - off < f->chunk_bytes ? size - off : f->chunk_bytes;
		struct fetch_job *j;
		int ret;

		/* When the network or the disk lags this far, the readers fetch the rest
		 * themselves. */
		if (!take_ahead(f, len))
			break;
		ret = cache_chunk_acquire(co, idx, false);
		if (ret != CACHE_FETCH) {
			give_ahead(f, len);
			if (ret == CACHE_HIT) {
				cache_chunk_release(co, idx);
				if (from_disk)
					disk_ahead(f, co, idx);
			}
			continue; /* present, being fetched, or an error a reader will see */
		}
		j = job_new(f, co, idx, NULL);
		if (!j) {
			give_ahead(f, len);
			cache_chunk_fail(co, idx, -ENOMEM);
			break;
		}
		submit(f, j);
		started++;
	}
	if (next)
		*next = idx;
	return started;
}

unsigned fetcher_prefetch(struct fetcher *f, struct cache_object *co, uint64_t first, uint64_t n,
	uint64_t *next)
{
	return prefetch(f, co, first, n, next, false);
}

unsigned fetcher_prefetch_sequential(struct fetcher *f, struct cache_object *co, uint64_t first,
	uint64_t n, uint64_t *next)
{
	return prefetch(f, co, first, n, next, true);
}

int fetcher_open_node(struct fetcher *f, struct namespace *ns, struct ns_node *n,
	struct cache_object **out)
{
	struct ns_object o;
	int ret;

	*out = NULL;
	ret = namespace_peek_object(ns, n, &o);
	if (ret)
		return ret;
	ret = cache_object_open(f->c, &o.obj, o.version, out);
	namespace_object_done(&o);
	return ret;
}
