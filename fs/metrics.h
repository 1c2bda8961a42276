/* Prometheus metrics of a mount (--metrics-addr): latency histograms that the read path feeds
 * with a few relaxed atomic adds (metrics.c), and the HTTP server (metrics_http.c:
 * libmicrohttpd, one thread of its own; metrics_none.c in a build without it) that answers
 * GET /metrics with the counters `ferry stat` reads, in the text exposition format. The server
 * reads counters only: it never waits for, nor holds up, a FUSE request. */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ferryfs;
struct metrics_server;

#define METRICS_MAX_BOUNDS 20

/* Which latency a histogram measures; each kind has its own bucket bounds (metrics.c). */
enum metrics_latency {
	METRICS_LATENCY_ORIGIN_REQUEST, /* one request to the origin: 1 ms to 60 s */
	METRICS_LATENCY_FUSE_READ,      /* one FUSE read, arrival to reply: 100 us to 30 s */
};

/* A latency histogram. bounds_ns is fixed at init; counts[i] counts the observations in
 * (bounds_ns[i-1], bounds_ns[i]] (not cumulative: one add per observation), counts[nr_bounds]
 * those above the last bound. Counts and sum are relaxed atomics: any thread observes, the
 * scrape reads them one by one (a scrape during reads may see an observation's count and
 * not yet its sum, which Prometheus tolerates). */
struct metrics_histogram {
	const uint64_t *bounds_ns;
	unsigned nr_bounds;
	atomic_uint_fast64_t counts[METRICS_MAX_BOUNDS + 1];
	atomic_uint_fast64_t sum_ns;
};

void metrics_histogram_init(struct metrics_histogram *h, enum metrics_latency kind);

/* Records one observation of ns nanoseconds: a scan of at most 20 bounds and two atomic adds,
 * no lock. */
static inline void metrics_observe_ns(struct metrics_histogram *h, uint64_t ns)
{
	unsigned i = 0;

	while (i < h->nr_bounds && ns > h->bounds_ns[i])
		i++;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

/* Checks a --metrics-addr value: HOST:PORT, HOST an IPv4 address, a name, or an IPv6 address
 * in brackets ([::1]:9100), PORT 1 to 65535. 0, or -EINVAL with a one-line reason; -ENOTSUP
 * (and "this build has no metrics server") in a build without the server. */
int metrics_check_addr(const char *addr, char *errbuf, size_t errlen);

/* Listens on addr (metrics_check_addr's form; a name listens on the first address it resolves
 * to) and serves GET /metrics from fs's counters on a thread of its own. Fails (-errno, one
 * line in errbuf) when the address is bad or cannot be bound: the port is in use, the address
 * is not this host's, a port under 1024 without the right. fs must outlive the server.
 * At most 16 connections at once; each is closed 2 s after it opened (or after its last
 * answer), finished or not, so that slow clients cannot hold every slot. */
int metrics_server_new(struct metrics_server **out, const char *addr, struct ferryfs *fs,
	char *errbuf, size_t errlen);
/* Stops the server: closes the listening socket and its connections and joins its thread. A
 * scrape in progress is cut off. NULL: nothing. */
void metrics_server_free(struct metrics_server *s);

/* The exposition text of fs's metrics, NUL-terminated, in *text (malloc'd; the caller frees)
 * and its length in *len. 0 or -ENOMEM. */
int metrics_render(struct ferryfs *fs, char **text, size_t *len);

#endif
