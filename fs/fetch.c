/* The fetch engine: a read of an object range becomes chunk acquisitions from the cache; the
 * misses become ranged GETs on one libcurl multi handle driven by one thread (connection reuse,
 * up to max_transfers in flight, retries with jittered backoff), or reads by worker threads for
 * backends without HTTP. The curl thread never touches the disk: a finished chunk goes back to
 * the reader that asked for it (which stores it and copies from memory) or, for readahead, to a
 * worker, so one slow disk write never stalls the other transfers. A readahead chunk that
 * arrived is landed in the cache's flight record (cache_chunk_land): until a worker has stored
 * it, readers copy from its buffer (cache_chunk_acquire_copy) and never wait for that write.
 * Measured (cold dd of 2 GiB, 1 MiB readahead, 2 shared cores, 4 runs alternated): 651-794
 * MB/s against 559-634 MB/s when readers waited for the store. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/cache.h"
#include "fs/fetch.h"
#include "fs/log.h"
#include "fs/namespace.h"
#include "fs/net.h"
#include "fs/remote.h"

#define FETCH_WORKERS	  4
/* With HTTP the workers only store readahead chunks (page-cache copies). Measured on 2 shared
 * cores, cold dd of 2 GiB through a fresh mount, 3 runs each: 1 storer 920-980 MB/s, 2 storers
 * 790-850, 4 storers 730-880: parallel stores take CPU from the curl thread and finish the
 * chunk the reader waits for later, where one stores them in the order they arrived. */
#define FETCH_STORERS	  1
/* curl's receive buffer: the 16 KiB default costs a recv and a callback per 16 KiB; with
 * 512 KiB a chunk's transfer took 16-20 ms instead of 29-39 ms (16 in flight, loopback). */
#define FETCH_RECV_BUFFER (512L << 10)
#define FETCH_BACKOFF_MAX 10000 /* ms */
/* Reads of one chunk from the cache that may fail their checksum before a read gives up. */
#define FETCH_MAX_BAD_READS 3

struct fetch_batch;

/* One chunk to fetch. Owned by whoever holds it: the submitter, then the curl thread or a worker,
 * then the batch's reader (or a worker for readahead), which frees it. */
struct fetch_job {
	struct fetch_job *next;
	struct fetch_job *active_next; /* curl thread: list of transfers in flight */
	struct fetch_batch *batch;     /* NULL: readahead, finished by a worker */
	struct cache_object *co;       /* a reference */
	const struct remote_object *obj; /* co's remote identity; its etag pins the response */
	uint64_t idx, off;
	size_t len;
	char *buf; /* len bytes */
	size_t got;
	unsigned attempts;
	int err;		/* 0 or -errno once done */
	bool read_job;		/* for a worker: still to be read through ops->read */
	bool uncached;		/* for its reader only: the cache is not asked to store it */
	uint64_t not_before_ns; /* retry backoff */
	uint64_t start_ns;
	/* transfer state, curl thread only */
	CURL *easy;
	struct curl_slist *headers;
	long status;
	bool have_range, overflow, etag_too_long;
	uint64_t cr_start, cr_end, cr_total;
	char resp_etag[1025]; /* the response's ETag, "" when it sent none */
	time_t resp_mtime;    /* its Last-Modified, 0 when none */
	int64_t retry_after_ms; /* its Retry-After, -1 when none */
};

/* The chunks one reader waits for. */
struct fetch_batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fetch_job *done; /* protected by lock */
	unsigned pending;	/* protected by lock */
};

/* queue, work, stop and the buffer list are protected by lock; ready and the multi handle belong
 * to the curl thread; stats are atomics. */
struct fetcher {
	struct remote *r;
	struct cache *c;
	uint32_t chunk_bytes;
	unsigned max_transfers, max_retries, backoff_ms;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct fetch_job *queue, **queue_tail; /* submitted, for the curl thread */
	struct fetch_job *work, **work_tail;   /* for the workers */
	bool stop_curl, stop_workers;
	bool aborted; /* fetcher_abort: every transfer fails at once, from now on */
	char **bufs; /* idle chunk buffers */
	unsigned nr_bufs, max_bufs;
	CURLM *multi;
	bool have_curl_thread;
	pthread_t curl_thread;
	pthread_t workers[FETCH_WORKERS];
	unsigned nr_workers;
	struct fetch_job *ready;  /* curl thread: waiting to start or to retry */
	struct fetch_job *active; /* curl thread: transfers in flight */
	CURL **idle_easy;	  /* curl thread */
	unsigned nr_idle_easy, nr_active;
	unsigned seed;
	/* Readahead chunks that arrived and are not stored yet (they hold buffers): protected
	 * by lock, bounds fetcher_prefetch. */
	unsigned nr_unstored;
	atomic_uint_fast64_t bytes_fetched, requests, retries, errors, fetch_ns;
};

static uint64_t now_ns(void)
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
}

static struct fetch_job *job_new(
	struct fetcher *f, struct cache_object *co, uint64_t idx, struct fetch_batch *batch)
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
	j->read_job = !f->r->ops->prepare_get;
	return j;
}

/* A job is done (j->err set): to its reader, or to a worker to store. */
static void job_deliver(struct fetcher *f, struct fetch_job *j)
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
	/* Readers waiting for this chunk copy it from here while it waits for its store. */
	if (!j->err)
		cache_chunk_land(j->co, j->idx, j->buf, j->len);
	pthread_mutex_lock(&f->lock);
	j->next = NULL;
	*f->work_tail = j;
	f->work_tail = &j->next;
	f->nr_unstored++;
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

/* Queues j for a worker (a read job) or the curl thread. Once queued, j may be done and freed
 * at any moment: nothing of it is read after the unlock. */
static void submit(struct fetcher *f, struct fetch_job *j)
{
	bool to_curl = !j->read_job;

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
		curl_multi_wakeup(f->multi);
}

/* --- the curl thread --- */

static size_t job_header(char *line, size_t size, size_t n, void *arg)
{
	struct fetch_job *j = arg;
	size_t len = size * n, vl;
	const char *v;

	if (len > 5 && !strncmp(line, "HTTP/", 5)) {
		const char *sp = memchr(line, ' ', len);

		/* A new response (after a 100 Continue, say): forget the last one's headers. */
		j->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		j->have_range = j->etag_too_long = false;
		j->resp_etag[0] = '\0';
		j->resp_mtime = 0;
		j->retry_after_ms = -1;
	} else if ((v = net_header_value(line, len, "Content-Range", &vl))) {
		j->have_range =
			!net_parse_content_range(v, vl, &j->cr_start, &j->cr_end, &j->cr_total);
	} else if ((v = net_header_value(line, len, "ETag", &vl))) {
		j->etag_too_long = vl >= sizeof(j->resp_etag);
		if (!j->etag_too_long) {
			memcpy(j->resp_etag, v, vl);
			j->resp_etag[vl] = '\0';
		}
	} else if ((v = net_header_value(line, len, "Last-Modified", &vl))) {
		char date[64];

		if (vl < sizeof(date)) {
			memcpy(date, v, vl);
			date[vl] = '\0';
			j->resp_mtime = curl_getdate(date, NULL);
		}
	} else if ((v = net_header_value(line, len, "Retry-After", &vl))) {
		j->retry_after_ms = net_parse_retry_after(v, vl);
	}
	return len;
}

static size_t job_body(char *data, size_t size, size_t n, void *arg)
{
	struct fetch_job *j = arg;
	size_t len = size * n;

	if (j->status != 206 && j->status != 200)
		return len; /* an error page: not data */
	if (j->got + len > j->len) {
		j->overflow = true;
		return 0;
	}
	memcpy(j->buf + j->got, data, len);
	j->got += len;
	return len;
}

static int start_job(struct fetcher *f, struct fetch_job *j)
{
	CURL *e = f->nr_idle_easy ? f->idle_easy[--f->nr_idle_easy] : curl_easy_init();
	int ret;

	if (!e)
		return -ENOMEM;
	curl_easy_reset(e);
	j->headers = NULL;
	ret = f->r->ops->prepare_get(f->r, j->obj, j->off, j->len, e, &j->headers);
	if (ret) {
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		f->idle_easy[f->nr_idle_easy++] = e;
		return ret;
	}
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, FETCH_RECV_BUFFER);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, job_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, job_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(e, CURLOPT_PRIVATE, j);
	j->easy = e;
	j->got = 0;
	j->status = 0;
	j->have_range = j->overflow = j->etag_too_long = false;
	j->resp_etag[0] = '\0';
	j->resp_mtime = 0;
	j->retry_after_ms = -1;
	j->attempts++;
	j->start_ns = now_ns();
	atomic_fetch_add(&f->requests, 1);
	if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		j->easy = NULL;
		f->idle_easy[f->nr_idle_easy++] = e;
		return -EIO;
	}
	f->nr_active++;
	j->active_next = f->active;
	f->active = j;
	return 0;
}

/* An ETag without its quotes: some stores quote it in listings and not in responses. */
static void etag_unquoted(const char *t, const char **p, size_t *len)
{
	size_t n = strlen(t);

	if (n >= 2 && t[0] == '"' && t[n - 1] == '"') {
		t++;
		n -= 2;
	}
	*p = t;
	*len = n;
}

/* Checks that a response is of the pinned version: the same ETag when the object has one
 * (a response without one cannot be checked, so it is not data), else the same
 * Last-Modified when the response sends one; the size is checked by the caller. A server
 * that ignores If-Match answers with the new version's ETag, which lands here. */
static enum net_error check_version(const struct fetch_job *j)
{
	const char *want, *got;
	size_t wl, gl;

	if (j->etag_too_long)
		return NET_BAD_RESPONSE;
	if (j->obj->etag) {
		if (!j->resp_etag[0])
			return NET_BAD_RESPONSE;
		etag_unquoted(j->obj->etag, &want, &wl);
		etag_unquoted(j->resp_etag, &got, &gl);
		return wl == gl && !memcmp(want, got, wl) ? NET_OK : NET_CHANGED;
	}
	if (j->obj->mtime.tv_sec > 0 && j->resp_mtime > 0 && j->resp_mtime != j->obj->mtime.tv_sec)
		return NET_CHANGED;
	return NET_OK;
}

/* Checks that a response is exactly the bytes asked for, of the version asked for: 206 with
 * the requested Content-Range and the pinned total, or 200 with the whole object when the
 * chunk is the whole object. Anything else, other 2xx included, is an error, never data. */
static enum net_error check_response(const struct fetch_job *j, CURLcode code)
{
	enum net_error ne;

	if (j->overflow)
		return NET_BAD_RESPONSE;
	if (code != CURLE_OK)
		return net_error_from_curl(code);
	if (j->status == 206) {
		if (!j->have_range)
			return NET_BAD_RESPONSE;
		if (j->cr_total != j->obj->size)
			return NET_CHANGED;
		if (j->cr_start != j->off || j->cr_end != j->off + j->len - 1)
			return NET_BAD_RESPONSE;
	} else if (j->status == 200) {
		/* A server that ignores Range is fine only when the chunk is the whole object. */
		if (j->off != 0 || j->len != j->obj->size)
			return NET_BAD_RESPONSE;
	} else if (j->status >= 200 && j->status < 300) {
		return NET_BAD_RESPONSE; /* 201, 203, 204...: not the bytes asked for */
	} else {
		return net_error_from_status(j->status);
	}
	ne = check_version(j);
	if (ne != NET_OK)
		return ne;
	return j->got == j->len ? NET_OK : NET_SHORT_BODY;
}

static void retry_later(struct fetcher *f, struct fetch_job *j)
{
	uint64_t ms = f->backoff_ms;
	unsigned i;

	for (i = 1; i < j->attempts && ms < FETCH_BACKOFF_MAX; i++)
		ms *= 2;
	if (ms > FETCH_BACKOFF_MAX)
		ms = FETCH_BACKOFF_MAX;
	/* jitter: 0.5x .. 1.5x, so readers that failed together do not retry together */
	ms = ms / 2 + (uint64_t)rand_r(&f->seed) % (ms + 1);
	/* A server that says when to come back (429, 503) is taken at its word, within the
	 * cap, and readers asked together still spread out after it. */
	if (j->retry_after_ms > (int64_t)ms) {
		ms = j->retry_after_ms < FETCH_BACKOFF_MAX ? (uint64_t)j->retry_after_ms
							     : FETCH_BACKOFF_MAX;
		ms += (uint64_t)rand_r(&f->seed) % (ms / 4 + 1);
	}
	j->not_before_ns = now_ns() + ms * 1000000ull;
	j->next = f->ready;
	f->ready = j;
	atomic_fetch_add(&f->retries, 1);
}

static void finish_transfer(struct fetcher *f, struct fetch_job *j, CURLcode code)
{
	struct fetch_job **pp;
	enum net_error ne;

	for (pp = &f->active; *pp && *pp != j; pp = &(*pp)->active_next)
		;
	if (*pp)
		*pp = j->active_next;
	curl_multi_remove_handle(f->multi, j->easy);
	f->idle_easy[f->nr_idle_easy++] = j->easy;
	j->easy = NULL;
	curl_slist_free_all(j->headers);
	j->headers = NULL;
	f->nr_active--;
	ne = check_response(j, code);
	if (ne == NET_OK) {
		atomic_fetch_add(&f->bytes_fetched, j->got);
		atomic_fetch_add(&f->fetch_ns, now_ns() - j->start_ns);
		j->err = 0;
		job_deliver(f, j);
		return;
	}
	if (net_error_is_retryable(ne) && j->attempts <= f->max_retries && !f->stop_curl) {
		log_debug("fetch '%s' chunk %llu: %s (HTTP %ld), retrying", j->obj->path,
			(unsigned long long)j->idx, net_error_str(ne), j->status);
		retry_later(f, j);
		return;
	}
	/* A changed object is ESTALE, 403 EACCES, 404 ENOENT (docs/ferry.md), the rest EIO. */
	j->err = net_error_to_errno(ne);
	log_warn("fetch '%s' bytes %llu-%llu: %s (HTTP %ld, %u attempts)", j->obj->path,
		(unsigned long long)j->off, (unsigned long long)(j->off + j->len - 1),
		net_error_str(ne), j->status, j->attempts);
	job_deliver(f, j);
}

/* Curl thread: every transfer waiting or in flight fails with EIO, so no reader waits for
 * ever (stopping, or aborted). */
static void fail_all(struct fetcher *f)
{
	while (f->ready) {
		struct fetch_job *j = f->ready;

		f->ready = j->next;
		j->err = -EIO;
		job_deliver(f, j);
	}
	while (f->active) {
		struct fetch_job *j = f->active;

		f->active = j->active_next;
		curl_multi_remove_handle(f->multi, j->easy);
		curl_easy_cleanup(j->easy);
		j->easy = NULL;
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		f->nr_active--;
		j->err = -EIO;
		job_deliver(f, j);
	}
}

static void *curl_thread_main(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct fetch_job *in, *j, **pp;
		uint64_t now, next_ns = 0;
		int running, timeout_ms = 1000;
		CURLMsg *msg;
		bool stop, aborted;

		pthread_mutex_lock(&f->lock);
		in = f->queue;
		f->queue = NULL;
		f->queue_tail = &f->queue;
		stop = f->stop_curl;
		aborted = f->aborted;
		pthread_mutex_unlock(&f->lock);
		/* Jobs a reader waits for go before readahead (within a file or across a
		 * directory), each kind in submission order: readers want their first chunk
		 * first, and a read must not queue behind chunks nobody asked for yet. */
		while (in) {
			j = in;
			in = j->next;
			for (pp = &f->ready; *pp && (!j->batch || (*pp)->batch); pp = &(*pp)->next)
				;
			j->next = *pp;
			*pp = j;
		}
		if (stop)
			break;
		if (aborted) {
			fail_all(f);
			curl_multi_poll(f->multi, NULL, 0, 1000, NULL);
			continue;
		}
		now = now_ns();
		for (pp = &f->ready; *pp && f->nr_active < f->max_transfers;) {
			int ret;

			j = *pp;
			if (j->not_before_ns > now) {
				if (!next_ns || j->not_before_ns < next_ns)
					next_ns = j->not_before_ns;
				pp = &j->next;
				continue;
			}
			*pp = j->next;
			ret = start_job(f, j);
			if (ret) {
				j->err = ret == -ENOMEM ? -ENOMEM : -EIO;
				job_deliver(f, j);
			}
		}
		curl_multi_perform(f->multi, &running);
		while ((msg = curl_multi_info_read(f->multi, &running))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
			finish_transfer(f, j, msg->data.result);
		}
		/* Finished transfers may have freed slots or queued retries: go round again. */
		if (f->ready && f->nr_active < f->max_transfers) {
			uint64_t soonest = UINT64_MAX;

			for (j = f->ready; j; j = j->next)
				if (j->not_before_ns < soonest)
					soonest = j->not_before_ns;
			now = now_ns();
			if (soonest <= now)
				continue;
			if ((soonest - now) / 1000000 < (uint64_t)timeout_ms)
				timeout_ms = (int)((soonest - now) / 1000000) + 1;
		}
		curl_multi_poll(f->multi, NULL, 0, timeout_ms, NULL);
	}
	fail_all(f);
	return NULL;
}

/* --- workers: reads of non-HTTP backends, and storing readahead chunks --- */

static void *worker_main(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct fetch_job *j;
		bool delivered; /* a readahead chunk that arrived, counted in nr_unstored */

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
		delivered = !j->read_job;
		if (j->read_job) {
			uint64_t t0 = now_ns();
			ssize_t n;

			j->read_job = false;
			atomic_fetch_add(&f->requests, 1);
			n = f->r->ops->read(f->r, j->obj, j->buf, j->len, j->off);
			if (n == (ssize_t)j->len) {
				j->err = 0;
				j->got = j->len;
				atomic_fetch_add(&f->bytes_fetched, j->len);
				atomic_fetch_add(&f->fetch_ns, now_ns() - t0);
			} else {
				j->err = n == -ESTALE ? -ESTALE : -EIO;
			}
			if (j->batch) {
				job_deliver(f, j);
				continue;
			}
			if (j->err)
				atomic_fetch_add(&f->errors, 1);
		}
		if (job_store(j))
			cache_chunk_release(j->co, j->idx);
		if (delivered) {
			pthread_mutex_lock(&f->lock);
			f->nr_unstored--;
			pthread_mutex_unlock(&f->lock);
		}
		job_free(f, j);
	}
	return NULL;
}

/* --- the public calls --- */

int fetcher_new(
	struct fetcher **out, struct remote *r, struct cache *c, const struct fetch_config *cfg)
{
	struct fetcher *f;
	unsigned i, nr_workers;
	int ret;

	*out = NULL;
	if (!r || !c || (!r->ops->prepare_get && !r->ops->read))
		return -EINVAL;
	if (r->ops->prepare_get && net_global_init())
		return -EIO;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->r = r;
	f->c = c;
	f->chunk_bytes = cache_chunk_bytes(c);
	f->max_transfers = cfg && cfg->max_transfers ? cfg->max_transfers : 16;
	f->max_retries = cfg && cfg->max_retries ? cfg->max_retries : 5;
	f->backoff_ms = cfg && cfg->backoff_ms ? cfg->backoff_ms : 100;
	f->seed = (unsigned)now_ns();
	f->queue_tail = &f->queue;
	f->work_tail = &f->work;
	f->max_bufs = f->max_transfers + FETCH_WORKERS;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->work_cond, NULL);
	ret = -ENOMEM;
	f->bufs = calloc(f->max_bufs, sizeof(*f->bufs));
	f->idle_easy = calloc(f->max_transfers, sizeof(*f->idle_easy));
	if (!f->bufs || !f->idle_easy)
		goto err;
	if (r->ops->prepare_get) {
		f->multi = curl_multi_init();
		if (!f->multi)
			goto err;
		curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->max_transfers);
		curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->max_transfers);
		ret = -pthread_create(&f->curl_thread, NULL, curl_thread_main, f);
		if (ret)
			goto err;
		f->have_curl_thread = true;
	}
	nr_workers = r->ops->prepare_get ? FETCH_STORERS : FETCH_WORKERS;
	for (i = 0; i < nr_workers; i++) {
		ret = -pthread_create(&f->workers[i], NULL, worker_main, f);
		if (ret)
			goto err;
		f->nr_workers++;
	}
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
	if (f->have_curl_thread) {
		pthread_mutex_lock(&f->lock);
		f->stop_curl = true;
		pthread_mutex_unlock(&f->lock);
		curl_multi_wakeup(f->multi);
		pthread_join(f->curl_thread, NULL);
	}
	pthread_mutex_lock(&f->lock);
	f->stop_workers = true;
	pthread_cond_broadcast(&f->work_cond);
	pthread_mutex_unlock(&f->lock);
	for (i = 0; i < f->nr_workers; i++)
		pthread_join(f->workers[i], NULL);
	for (i = 0; i < f->nr_idle_easy; i++)
		curl_easy_cleanup(f->idle_easy[i]);
	if (f->multi)
		curl_multi_cleanup(f->multi);
	for (i = 0; i < f->nr_bufs; i++)
		free(f->bufs[i]);
	free(f->bufs);
	free(f->idle_easy);
	pthread_cond_destroy(&f->work_cond);
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
	if (f->multi)
		curl_multi_wakeup(f->multi);
}

void fetcher_get_stats(struct fetcher *f, struct fetch_stats *st)
{
	st->bytes_fetched = atomic_load(&f->bytes_fetched);
	st->requests = atomic_load(&f->requests);
	st->retries = atomic_load(&f->retries);
	st->errors = atomic_load(&f->errors);
	st->fetch_ns = atomic_load(&f->fetch_ns);
}

enum { CH_HIT, CH_MINE, CH_WAIT, CH_DONE };

/* The part [*a, *b) of chunk idx that falls in [off, off+len). */
static void chunk_part(
	struct fetcher *f, uint64_t off, size_t len, uint64_t idx, uint64_t *a, uint64_t *b)
{
	uint64_t cs = idx * f->chunk_bytes;

	*a = off > cs ? off : cs;
	*b = off + len < cs + f->chunk_bytes ? off + len : cs + f->chunk_bytes;
}

/* Copies the part of chunk idx that falls in [off, off+len) from src (the chunk's bytes). */
static void copy_part(
	struct fetcher *f, char *buf, uint64_t off, size_t len, uint64_t idx, const char *src)
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
		if (!j->uncached && job_store(j))
			cache_chunk_release(j->co, j->idx);
		job_free(f, j);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return err;
}

/* Fetches chunk idx for one reader into memory, outside the cache's single flight, and
 * copies its part of [off, off+len) into buf. */
static int fetch_uncached(struct fetcher *f, struct cache_object *co, struct fetch_batch *b, char *buf, uint64_t off, size_t len,
	uint64_t idx)
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
static int do_window(struct fetcher *f, struct cache_object *co, char *buf, uint64_t off, size_t len, uint64_t first, uint64_t last)
{
	unsigned nr = (unsigned)(last - first + 1), i;
	struct fetch_batch b = {
		.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
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

ssize_t fetcher_read(struct fetcher *f, struct cache_object *co, void *buf, size_t len, uint64_t off)
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

unsigned fetcher_prefetch(struct fetcher *f, struct cache_object *co, uint64_t first, uint64_t n)
{
	uint64_t nr_chunks = cache_object_nr_chunks(co), idx;
	unsigned started = 0;

	for (idx = first; idx < first + n && idx < nr_chunks; idx++) {
		struct fetch_job *j;
		unsigned nr_unstored;
		int ret;

		/* Chunks waiting for their store hold memory: when the disk lags this far, the
		 * readers fetch the rest themselves, and wait for their own stores. */
		pthread_mutex_lock(&f->lock);
		nr_unstored = f->nr_unstored;
		pthread_mutex_unlock(&f->lock);
		if (nr_unstored >= 2 * f->max_transfers)
			break;
		ret = cache_chunk_acquire(co, idx, false);

		if (ret == CACHE_HIT) {
			cache_chunk_release(co, idx);
			continue;
		}
		if (ret != CACHE_FETCH)
			continue; /* being fetched, or an error a reader will see */
		j = job_new(f, co, idx, NULL);
		if (!j) {
			cache_chunk_fail(co, idx, -ENOMEM);
			break;
		}
		submit(f, j);
		started++;
	}
	return started;
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
