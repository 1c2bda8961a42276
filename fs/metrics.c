/* Prometheus metrics of a mount (metrics.h): the exposition text of the counters that
 * `ferry stat` reads (cache, fetch engine, shared tier, FUSE) plus the latency histograms.
 * A scrape copies counters (atomics; the cache's and the tier's small structs under their
 * locks, held for a copy as `ferry stat` holds them) on the server's own thread: a FUSE
 * request never waits for a scrape, nor for a slow client. The server is a backend file:
 * metrics_http.c (libmicrohttpd) or metrics_none.c (a build without it). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/cache.h"
#include "fs/dir_prefetch.h"
#include "fs/fetch.h"
#include "fs/fuse_i.h"
#include "fs/log.h"
#include "fs/metrics.h"
#include "fs/tier.h"

/* Bucket bounds. An origin request on loopback takes a few ms for a chunk of 1-8 MiB and a
 * remote store tens of ms; retried stalls and timeouts run to tens of seconds. A FUSE read
 * served from the cache takes tens to hundreds of microseconds (1 MiB, checked block by
 * block), one that waits for the origin as long as the request. */
static const uint64_t origin_request_bounds_ns[] = {
	1000000ull,
	2500000ull,
	5000000ull,
	10000000ull,
	25000000ull,
	50000000ull,
	100000000ull,
	250000000ull,
	500000000ull,
	1000000000ull,
	2500000000ull,
	5000000000ull,
	10000000000ull,
	30000000000ull,
	60000000000ull,
};
static const uint64_t fuse_read_bounds_ns[] = {
	100000ull,
	250000ull,
	500000ull,
	1000000ull,
	2500000ull,
	5000000ull,
	10000000ull,
	25000000ull,
	50000000ull,
	100000000ull,
	250000000ull,
	500000000ull,
	1000000000ull,
	2500000000ull,
	5000000000ull,
	10000000000ull,
	30000000000ull,
};
_Static_assert(sizeof(origin_request_bounds_ns) / sizeof(uint64_t) <= METRICS_MAX_BOUNDS,
	"too many bounds");
_Static_assert(sizeof(fuse_read_bounds_ns) / sizeof(uint64_t) <= METRICS_MAX_BOUNDS,
	"too many bounds");

void metrics_histogram_init(struct metrics_histogram *h, enum metrics_latency kind)
{
	memset(h, 0, sizeof(*h));
	if (kind == METRICS_LATENCY_FUSE_READ) {
		h->bounds_ns = fuse_read_bounds_ns;
		h->nr_bounds = sizeof(fuse_read_bounds_ns) / sizeof(uint64_t);
	} else {
		h->bounds_ns = origin_request_bounds_ns;
		h->nr_bounds = sizeof(origin_request_bounds_ns) / sizeof(uint64_t);
	}
}

/* ---- the exposition text ---- */

static void header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	header(f, name, "counter", help);
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void gauge(FILE *f, const char *name, const char *help, uint64_t v)
{
	header(f, name, "gauge", help);
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void histogram(FILE *f, const char *name, const char *help,
	const struct metrics_histogram *h)
{
	uint64_t cum = 0;
	unsigned i;

	header(f, name, "histogram", help);
	for (i = 0; i < h->nr_bounds; i++) {
		cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
		fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
			(double)h->bounds_ns[i] / 1e9, cum);
	}
	cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
	fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
	fprintf(f, "%s_sum %.9f\n", name,
		(double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
	fprintf(f, "%s_count %" PRIu64 "\n", name, cum);
}

static void render(FILE *f, struct ferryfs *fs)
{
	static const enum tier_state states[] = { TIER_OFF, TIER_UP, TIER_DOWN, TIER_DENIED };
	struct fetcher *fe = fs->fetcher;
	struct cache_stats cs;
	struct fetch_stats st;
	struct tier_stats ts;
	struct timespec now;
	const char *name;

	cache_get_stats(fs->cache, &cs);
	fetcher_get_stats(fe, &st);
	tier_get_stats(fetcher_tier(fe), &ts);
	clock_gettime(CLOCK_MONOTONIC, &now);

	header(f, "ferry_build_info", "gauge", "The ferry version serving this mount (always 1).");
	fprintf(f, "ferry_build_info{version=\"%s\"} 1\n", FERRY_VERSION);
	header(f, "ferry_uptime_seconds", "gauge", "Seconds since the mount started.");
	fprintf(f, "ferry_uptime_seconds %.3f\n",
		(double)(now.tv_sec - fs->started.tv_sec) +
			(double)(now.tv_nsec - fs->started.tv_nsec) / 1e9);
	gauge(f, "ferry_offline",
		"1 when the mount came up without reaching the source (serves only what is cached).",
		fs->offline);

	/* the local chunk cache */
	counter(f, "ferry_cache_hits_total",
		"Chunk acquisitions served from the local cache (hits in ferry stat).", cs.hits);
	counter(f, "ferry_cache_misses_total",
		"Chunk acquisitions that found the chunk absent and fetched it (misses).",
		cs.misses);
	counter(f, "ferry_cache_read_bytes_total",
		"Bytes read from the local cache's disk, checked, to answer FUSE reads.",
		st.cache_read_bytes);
	counter(f, "ferry_cache_evictions_total", "Chunks evicted from the local cache.",
		cs.evictions);
	counter(f, "ferry_cache_verify_failures_total",
		"Cached chunks dropped because a block failed its checksum or could not be read.",
		cs.verify_failures);
	counter(f, "ferry_cache_disk_errors_total",
		"Failed reads, writes, syncs and file creations on the cache volume.",
		cs.disk_errors);
	gauge(f, "ferry_cache_used_bytes", "Bytes of cached chunks (and of fills in progress).",
		cs.used_bytes);
	gauge(f, "ferry_cache_limit_bytes", "The cache size limit (--cache-size); 0: none.",
		cs.max_bytes);
	gauge(f, "ferry_cache_chunk_size_bytes", "The chunk size of the cache.", fs->chunk_bytes);
	gauge(f, "ferry_cache_objects", "Object versions the cache knows.", cs.nr_objects);
	gauge(f, "ferry_cache_chunks", "Chunks present in the cache.", cs.nr_chunks);
	gauge(f, "ferry_cache_degraded",
		"1 once the cache volume kept failing: nothing more is stored until the next mount.",
		cs.degraded);

	/* the origin */
	counter(f, "ferry_origin_bytes_total",
		"Bytes of chunks received from the origin (bytes_fetched in ferry stat).",
		st.bytes_fetched);
	counter(f, "ferry_origin_requests_total",
		"Requests to the origin (ranged GETs; reads of a local source), retries included.",
		st.requests);
	counter(f, "ferry_origin_retries_total", "Requests to the origin that were retried.",
		st.retries);
	header(f, "ferry_origin_errors_total", "counter",
		"Failed requests to the origin by class, retried or not.");
	for (unsigned c = 0; c < FETCH_NR_ERROR_CLASSES; c++)
		if ((name = fetch_error_class_name(c)))
			fprintf(f, "ferry_origin_errors_total{class=\"%s\"} %" PRIu64 "\n", name,
				fetcher_nr_errors_of_class(fe, c));
	counter(f, "ferry_fetch_failures_total",
		"Chunk fetches that failed for good (fetch_errors in ferry stat).", st.errors);
	gauge(f, "ferry_fetch_chunks_in_flight",
		"Chunk fetches under way: queued, on the wire (tier or origin), or being stored.",
		st.chunks_in_flight);
	histogram(f, "ferry_origin_request_duration_seconds",
		"Time each request to the origin took, from its start to its end, failures too.",
		fetcher_request_latency(fe));

	/* the shared tier */
	header(f, "ferry_tier_state", "gauge",
		"The shared tier's state: 1 for the current one (off: no --shared-cache).");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		fprintf(f, "ferry_tier_state{state=\"%s\"} %d\n", tier_state_name(states[i]),
			ts.state == states[i]);
	counter(f, "ferry_tier_hits_total", "Chunks served from the shared tier, verified.",
		ts.hits);
	counter(f, "ferry_tier_bytes_total", "Bytes of chunks served from the shared tier.",
		ts.bytes);
	counter(f, "ferry_tier_misses_total", "Tier GETs answered 404.", ts.misses);
	counter(f, "ferry_tier_rejected_total",
		"Tier objects that failed verification: never served, fetched from the origin.",
		ts.rejected);
	counter(f, "ferry_tier_errors_total",
		"Tier requests that failed (no answer, timeout, 5xx, 403).", ts.errors);
	counter(f, "ferry_tier_puts_total", "Chunks written to the shared tier.", ts.puts);
	counter(f, "ferry_tier_put_bytes_total", "Bytes of chunks written to the shared tier.",
		ts.put_bytes);
	counter(f, "ferry_tier_puts_dropped_total",
		"Chunks not written to the tier (queue full, tier down or denied, PUT failed).",
		ts.puts_dropped);
	gauge(f, "ferry_tier_put_queue_chunks", "Chunks waiting for their PUT or being PUT.",
		ts.put_queued);

	/* FUSE */
	counter(f, "ferry_fuse_reads_total", "FUSE reads served.",
		(uint64_t)atomic_load(&fs->nr_ops[FERRY_OP_READ]));
	counter(f, "ferry_fuse_read_bytes_total", "Bytes returned by FUSE reads.",
		(uint64_t)atomic_load(&fs->read_bytes));
	counter(f, "ferry_fuse_read_errors_total", "FUSE reads answered with an error.",
		(uint64_t)atomic_load(&fs->read_errors));
	histogram(f, "ferry_fuse_read_duration_seconds",
		"Time from a FUSE read's arrival to its reply.", &fs->read_latency);
	counter(f, "ferry_dir_readahead_files_total",
		"Files whose first chunk --dir-readahead fetched before they were opened.",
		dir_prefetch_nr_files(fs->dir_prefetch));
}

int metrics_render(struct ferryfs *fs, char **text, size_t *len)
{
	FILE *f;
	int bad;

	*text = NULL;
	*len = 0;
	f = open_memstream(text, len);
	if (!f)
		return -ENOMEM;
	render(f, fs);
	bad = ferror(f);
	if (fclose(f) || bad) {
		free(*text);
		*text = NULL;
		*len = 0;
		return -ENOMEM;
	}
	return 0;
}
