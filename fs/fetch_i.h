/* Private to the fetch engine: its jobs and the fetcher with their locks, shared by fetch.c
 * (reads, readahead, workers: the scheduling) and fetch_curl.c (the HTTP transfers). */
#ifndef FERRY_FETCH_I_H
#define FERRY_FETCH_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <curl/curl.h>

#include "fs/fetch.h"
#include "fs/metrics.h"
#include "fs/remote/net.h"

struct remote_object;

#define FETCH_WORKERS 4

struct fetch_batch;

/* One chunk to fetch. Owned by whoever holds it: the submitter, then the curl thread or a worker,
 * then the batch's reader (or a worker for readahead), which frees it. */
struct fetch_job {
	struct fetch_job *next;
	struct fetch_job *active_next; /* curl thread: list of transfers in flight */
	struct fetch_batch *batch;     /* NULL: readahead, finished by a worker */
	struct fetcher *f;
	struct cache_object *co;         /* a reference */
	const struct remote_object *obj; /* co's remote identity; its etag pins the response */
	uint64_t idx, off;
	size_t len;
	char *buf; /* len bytes */
	size_t got;
	unsigned attempts;
	int err;                /* 0 or -errno once done */
	bool read_job;          /* for a worker: still to be read through ops->read */
	bool uncached;          /* for its reader only: the cache is not asked to store it */
	bool tier_tried;        /* the shared tier was asked (or could not be): origin next */
	bool from_tier;         /* the bytes came from the tier: not PUT back */
	uint64_t not_before_ns; /* retry backoff */
	uint64_t start_ns;
	/* transfer state, curl thread only */
	CURL *easy;
	struct curl_slist *headers;
	long status;
	bool have_range, overflow, etag_too_long;
	uint64_t cr_start, cr_end, cr_total;
	char resp_etag[1025];   /* the response's ETag, "" when it sent none */
	time_t resp_mtime;      /* its Last-Modified, 0 when none */
	int64_t retry_after_ms; /* its Retry-After, -1 when none */
};

/* A present chunk whose bytes a sequential reader will want soon: for the disk-ahead thread
 * (fetch.c, disk_ahead_main), which reads it into the page cache. */
struct disk_ahead {
	struct disk_ahead *next;
	struct cache_object *co; /* a reference */
	uint64_t idx;
};

/* The chunks one reader waits for. */
struct fetch_batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fetch_job *done; /* protected by lock */
	unsigned pending;       /* protected by lock */
};

/* queue, work, stop and the buffer list are protected by lock; ready and the multi handle belong
 * to the curl thread; stats are atomics. */
struct fetcher {
	struct remote *r;
	struct cache *c;
	struct tier *tier; /* NULL: none */
	uint32_t chunk_bytes;
	unsigned max_transfers, max_retries, backoff_ms;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct fetch_job *queue, **queue_tail; /* submitted, for the curl thread */
	struct fetch_job *work, **work_tail;   /* for the workers */
	bool stop_curl, stop_workers;
	bool aborted; /* fetcher_abort: every transfer fails at once, from now on */
	char **bufs;  /* idle chunk buffers */
	unsigned nr_bufs, max_bufs;
	CURLM *multi;
	bool have_curl_thread;
	pthread_t curl_thread;
	pthread_t workers[FETCH_WORKERS];
	unsigned nr_workers;
	struct fetch_job *ready;  /* curl thread: waiting to start or to retry */
	struct fetch_job *active; /* curl thread: transfers in flight */
	CURL **idle_easy;         /* curl thread */
	unsigned nr_idle_easy, nr_active;
	/* Bytes of the buffers of readahead jobs, from submission until stored or failed (a
	 * chunk, or a short last chunk's own size): protected by lock; fetcher_prefetch takes
	 * a job's bytes before it acquires the chunk (take_ahead). */
	uint64_t ahead_bytes, max_ahead_bytes;
	/* Present chunks to read ahead from the cache's disk, for the disk-ahead thread:
	 * protected by lock. */
	struct disk_ahead *disk_queue, **disk_tail;
	unsigned nr_disk_queued;
	bool stop_disk;
	pthread_cond_t disk_cond;
	pthread_t disk_thread;
	bool have_disk_thread;
	atomic_uint_fast64_t bytes_fetched, requests, retries, errors, fetch_ns;
	/* For --metrics-addr (fs/metrics.h), atomics too: failed origin requests by class
	 * (enum net_error, then FETCH_ERR_IO), bytes readers got from the cache's disk, jobs
	 * alive (job_new to job_free) and the latency of each origin request. */
	atomic_uint_fast64_t error_classes[FETCH_NR_ERROR_CLASSES];
	atomic_uint_fast64_t cache_read_bytes;
	atomic_uint_fast64_t nr_jobs;
	struct metrics_histogram request_latency;
};

/* The error class of a failed read of a backend without HTTP (a local directory). */
#define FETCH_ERR_IO NET_NR_ERRORS

/* Counts a finished request to the origin: its latency, and its class when it failed. */
static inline void fetch_count_request(struct fetcher *f, uint64_t ns, unsigned cls)
{
	metrics_observe_ns(&f->request_latency, ns);
	if (cls != NET_OK && cls < FETCH_NR_ERROR_CLASSES)
		atomic_fetch_add_explicit(&f->error_classes[cls], 1, memory_order_relaxed);
}

uint64_t fetch_now_ns(void);
/* A job is done (j->err set): to its reader, or to a worker to store. Any thread. */
void fetch_job_deliver(struct fetcher *f, struct fetch_job *j);

/* fetch_curl.c: the curl thread of a fetcher whose remote speaks HTTP (prepare_get). start
 * makes the multi handle and the thread (-errno; fetch_curl_free cleans up after a failure);
 * wake makes the thread look at f->queue and f->aborted again; stop joins it after it failed
 * what was in flight; free releases the handles. */
int fetch_curl_start(struct fetcher *f);
void fetch_curl_wake(struct fetcher *f);
void fetch_curl_stop(struct fetcher *f);
void fetch_curl_free(struct fetcher *f);

#endif
