/* The fetch engine: turns reads of object ranges into chunk acquisitions from the cache and,
 * for misses, ranged GETs (many in flight over one libcurl multi handle, retried with
 * backoff, pinned to the object's ETag by If-Match). */
#ifndef FERRY_FETCH_H
#define FERRY_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct remote;
struct cache;
struct cache_object;
struct fetcher;
struct namespace;
struct ns_node;
struct tier;

struct fetch_config {
	unsigned max_transfers; /* transfers in flight at once; 0: 16 */
	unsigned max_retries;   /* per chunk, for retryable failures; 0: 5 */
	unsigned backoff_ms;    /* first backoff, doubled with jitter each retry; 0: 100 */
	struct tier *tier;      /* the shared chunk tier, asked before the origin and filled
	                         * with what the origin sent; the fetcher takes it over (also
	                         * when fetcher_new fails). NULL: none */
};

struct fetch_stats {
	uint64_t bytes_fetched;
	uint64_t requests;
	uint64_t retries;
	uint64_t errors;           /* chunk fetches that failed for good */
	uint64_t fetch_ns;         /* summed wall time of successful transfers */
	uint64_t cache_read_bytes; /* bytes read from the cache's disk into readers' buffers */
	uint64_t chunks_in_flight; /* chunk fetches under way: queued for the tier or the
	                            * origin, on the wire, or waiting for their store */
};

/* Failed requests to the origin (each try, retried or not) are counted by class: the classes
 * of fs/remote/net.h's enum net_error (timeout, reset, http_5xx, ...) and "io" for a failed
 * read of a local source. */
#define FETCH_NR_ERROR_CLASSES 18
/* The label of class cls; NULL for a number that names no class (0 is success). */
const char *fetch_error_class_name(unsigned cls);
uint64_t fetcher_nr_errors_of_class(struct fetcher *f, unsigned cls);
/* The histogram of the time each request to the origin took, from its start to its end,
 * failed ones too (fs/metrics.h). */
struct metrics_histogram;
const struct metrics_histogram *fetcher_request_latency(struct fetcher *f);

int fetcher_new(struct fetcher **out, struct remote *r, struct cache *c,
	const struct fetch_config *cfg);
void fetcher_free(struct fetcher *f);
void fetcher_get_stats(struct fetcher *f, struct fetch_stats *st);
/* The fetcher's shared tier (for its stats), NULL when none. */
struct tier *fetcher_tier(struct fetcher *f);
/* Fails every transfer waiting or in flight with EIO, and every later one at once, so that
 * readers blocked on a stalled server return and the daemon can stop without waiting out the
 * server's timeouts. Thread-safe; not for signal handlers. */
void fetcher_abort(struct fetcher *f);

/* Every call below takes the cache object alone: it carries the remote identity (path, size,
 * ETag, mtime) that each GET is pinned to (cache_object_open). */

/* The cache object of node n's current version (as namespace_peek_object sees it: not an
 * open, keep_cache is not decided), opened in the fetcher's cache; 0 or -errno. */
int fetcher_open_node(struct fetcher *f, struct namespace *ns, struct ns_node *n,
	struct cache_object **out);

/* Reads [off, off+len) of co through the cache: hits come from disk, misses are fetched once
 * each, the chunks of one read concurrently. Returns bytes read (short only at the object's
 * end) or -EIO (server error, short body), -ESTALE (the object changed on the server). */
ssize_t fetcher_read(struct fetcher *f, struct cache_object *co, void *buf, size_t len,
	uint64_t off);

/* Starts fetching the absent chunks among [first, first + n) in the background and returns at
 * once (readahead): how many it started (none for chunks present or being fetched). It stops
 * early while readahead holds its bound of memory (FETCH_AHEAD_BYTES of chunk buffers, a short
 * last chunk counting its own size: queued, in flight or waiting for the disk); *next (when
 * not NULL) is then the first chunk it did not go through, else first + n clipped to the
 * object. co gets a reference for as long as needed. */
unsigned fetcher_prefetch(struct fetcher *f, struct cache_object *co, uint64_t first, uint64_t n,
	uint64_t *next);
/* fetcher_prefetch for a reader that reads through the page cache in order (a sequential
 * read of a file, a walk of a directory's files): the present chunks among them are also read
 * from the cache's disk into the page cache ahead of it, by a thread of the fetcher (not
 * counted in the return; still checked block by block when read). Not for a reader of the
 * cache file with O_DIRECT (the loader's fast path), for which it would read twice. */
unsigned fetcher_prefetch_sequential(struct fetcher *f, struct cache_object *co, uint64_t first,
	uint64_t n, uint64_t *next);

/* Blocks until the chunks covering [off, off+len) are present, fetching what is absent;
 * 0 or -errno. Used by `ferry warm` and the loader's residency call. */
int fetcher_make_resident(struct fetcher *f, struct cache_object *co, uint64_t off, uint64_t len);

#endif
