/* Shared libcurl plumbing for the HTTP-family backends and the fetch engine: one global init,
 * the common easy-handle setup, the small enum that network failures are reduced to, and the
 * backoff of every retry. */
#ifndef FERRY_NET_H
#define FERRY_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <curl/curl.h>

struct remote_options;

/* What went wrong with one request, coarse enough to decide on a retry. */
enum net_error {
	NET_OK = 0,
	NET_TIMEOUT,  /* connect or transfer timeout, low-speed limit */
	NET_RESET,    /* connection reset or closed mid-transfer, nothing received */
	NET_RESOLVE,  /* host name not resolved */
	NET_CONNECT,  /* connection refused or unreachable */
	NET_TLS,      /* TLS handshake or certificate verification failed */
	NET_HTTP_4XX, /* a 4xx other than those below */
	NET_HTTP_403,
	NET_HTTP_404,
	NET_HTTP_412, /* If-Match / If-Unmodified-Since failed: the object changed */
	NET_HTTP_416, /* range not satisfiable: the object shrank */
	NET_HTTP_429, /* too many requests: slow down and retry */
	NET_HTTP_5XX,
	NET_SHORT_BODY,   /* fewer body bytes than announced or asked for */
	NET_BAD_RESPONSE, /* a response that does not answer the request (wrong range, a 2xx
			   * other than 200/206, no version to check) */
	NET_CHANGED,      /* an answer about another version of the object (ETag, Last-Modified
			   * or size differs from the pinned one) */
	NET_OTHER,        /* any other libcurl failure */
	NET_NR_ERRORS,
};

/* curl_global_init once per process; later calls return the first result. 0 or -EIO. */
int net_global_init(void);

/* Common setup of an easy handle: TLS verification (on unless opt->insecure), CA file,
 * timeouts, low-speed limit, user agent, HTTP/2 where TLS allows it, no signals. opt may be
 * NULL for defaults. Does not set the URL nor any callback. */
void net_easy_setup(CURL *easy, const struct remote_options *opt);

/* Maps a finished transfer to a net_error: a libcurl code first, else the HTTP status
 * (2xx is NET_OK). */
enum net_error net_error_from_curl(CURLcode code);
enum net_error net_error_from_status(long status);
enum net_error net_error_of(CURLcode code, long status);

bool net_error_is_retryable(enum net_error e);
/* The wait before retry number `retry` (0: the first) of a request, in milliseconds: first_ms
 * doubled per retry up to max_ms, jittered 0.5x .. 1.5x so that clients that failed together
 * do not come back together. A server's Retry-After (retry_after_ms, -1 when none) that asks
 * for longer is taken at its word, within max_ms, plus up to a quarter. Thread-safe: the
 * jitter comes from a per-thread generator. */
uint64_t net_backoff_ms(unsigned retry, uint64_t first_ms, uint64_t max_ms, int64_t retry_after_ms);
const char *net_error_str(enum net_error e);
/* -errno for a failed object read: -ESTALE when the object changed (412, 416, another
 * version answered), -ENOENT for 404 and 410, -EACCES for 403, -EIO for the rest; 0 for
 * NET_OK. */
int net_error_to_errno(enum net_error e);

/* Parses the value of a Content-Range header ("bytes START-END/TOTAL"; leading blanks and a
 * trailing CRLF allowed). TOTAL "*" is refused: ferry always needs the object size.
 * 0 or -EINVAL. */
int net_parse_content_range(const char *value, size_t len, uint64_t *start, uint64_t *end,
	uint64_t *total);

/* An HTTP date (a Last-Modified value, say) as seconds since the epoch; 0 when the value is
 * not a date. */
time_t net_parse_http_date(const char *value, size_t len);

/* The delay a Retry-After header value asks for, in milliseconds: delta-seconds or an HTTP
 * date (relative to now). -1 when the value is neither. */
int64_t net_parse_retry_after(const char *value, size_t len);

/* Formats t as an HTTP date (RFC 7231 IMF-fixdate) into buf (at least 30 bytes). */
void net_format_http_date(int64_t t, char *buf, size_t buflen);

/* If a header line (as libcurl's header callback sees it) is "Name: value", returns a pointer
 * to the value with leading blanks skipped and stores its length without trailing CR/LF/blanks
 * in *vlen; NULL otherwise. Name is matched without regard to case. */
const char *net_header_value(const char *line, size_t len, const char *name, size_t *vlen);

#endif
