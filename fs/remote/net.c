/* Shared libcurl plumbing: global init, common easy-handle setup, and the mapping of libcurl
 * codes and HTTP statuses onto enum net_error, which the fetch engine's retry policy reads. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fs/remote/net.h"
#include "fs/remote/remote.h"

static pthread_once_t net_once = PTHREAD_ONCE_INIT;
static int net_init_result;

static void net_do_init(void)
{
	net_init_result = curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK ? 0 : -EIO;
}

int net_global_init(void)
{
	pthread_once(&net_once, net_do_init);
	return net_init_result;
}

void net_easy_setup(CURL *easy, const struct remote_options *opt)
{
	long connect_ms = opt && opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 10000;
	long low_speed_s = opt && opt->low_speed_time_s > 0 ? opt->low_speed_time_s : 30;

	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "ferry/" FERRY_VERSION);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	/* No total timeout: a large chunk on a slow link is fine as long as it keeps moving. */
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, low_speed_s);
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Ranged reads must get the stored bytes, never a re-encoded body. */
	curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, opt && opt->insecure ? 0L : 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, opt && opt->insecure ? 0L : 2L);
	if (opt && opt->ca_file)
		curl_easy_setopt(easy, CURLOPT_CAINFO, opt->ca_file);
	if (opt && opt->verbose > 1)
		curl_easy_setopt(easy, CURLOPT_VERBOSE, 1L);
}

enum net_error net_error_from_curl(CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return NET_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return NET_TIMEOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return NET_RESOLVE;
	case CURLE_COULDNT_CONNECT:
		return NET_CONNECT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
		return NET_TLS;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
		return NET_RESET;
	case CURLE_PARTIAL_FILE:
		return NET_SHORT_BODY;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_RANGE_ERROR:
	case CURLE_BAD_CONTENT_ENCODING:
		return NET_BAD_RESPONSE;
	default:
		return NET_OTHER;
	}
}

enum net_error net_error_from_status(long status)
{
	if (status >= 200 && status < 300)
		return NET_OK;
	switch (status) {
	case 403:
		return NET_HTTP_403;
	case 404:
	case 410:
		return NET_HTTP_404;
	case 412:
		return NET_HTTP_412;
	case 416:
		return NET_HTTP_416;
	case 429:
		return NET_HTTP_429;
	}
	if (status >= 400 && status < 500)
		return NET_HTTP_4XX;
	if (status >= 500 && status < 600)
		return NET_HTTP_5XX;
	return NET_BAD_RESPONSE; /* 1xx, 3xx (redirects are not followed), nonsense */
}

enum net_error net_error_of(CURLcode code, long status)
{
	return code != CURLE_OK ? net_error_from_curl(code) : net_error_from_status(status);
}

bool net_error_is_retryable(enum net_error e)
{
	switch (e) {
	case NET_TIMEOUT:
	case NET_RESET:
	case NET_HTTP_429:
	case NET_HTTP_5XX:
	case NET_SHORT_BODY:
	case NET_BAD_RESPONSE:
		/* A response that answered another question (204, a wrong range) is dropped,
		 * never stored; a proxy or a server under load may answer right next time. */
		return true;
	default:
		/* A changed object (412, 416, another version) must never be retried into mixed
		 * versions; a refused connection, TLS failure or 4xx will not heal within a
		 * backoff. */
		return false;
	}
}

/* splitmix64 on a per-thread state, seeded from the clock and the state's own address (which
 * differs between threads): the jitter needs spread, not secrecy, and rand() shares one state
 * between threads without a lock. */
static uint64_t jitter_random(void)
{
	static _Thread_local uint64_t state;
	uint64_t z;

	if (!state) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		state = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
			(uint64_t)(uintptr_t)&state;
	}
	z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t net_backoff_ms(unsigned retry, uint64_t first_ms, uint64_t max_ms, int64_t retry_after_ms)
{
	uint64_t ms = first_ms;
	unsigned i;

	for (i = 0; i < retry && ms < max_ms; i++)
		ms *= 2;
	if (ms > max_ms)
		ms = max_ms;
	ms = ms / 2 + jitter_random() % (ms + 1);
	if (retry_after_ms > (int64_t)ms) {
		ms = (uint64_t)retry_after_ms < max_ms ? (uint64_t)retry_after_ms : max_ms;
		ms += jitter_random() % (ms / 4 + 1);
	}
	return ms;
}

const char *net_error_str(enum net_error e)
{
	static const char *const names[NET_NR_ERRORS] = {
		[NET_OK] = "success",
		[NET_TIMEOUT] = "timed out",
		[NET_RESET] = "connection reset",
		[NET_RESOLVE] = "cannot resolve the host",
		[NET_CONNECT] = "cannot connect",
		[NET_TLS] = "TLS failure",
		[NET_HTTP_4XX] = "HTTP client error (4xx)",
		[NET_HTTP_403] = "HTTP 403 Forbidden",
		[NET_HTTP_404] = "HTTP 404 Not Found",
		[NET_HTTP_412] = "HTTP 412 Precondition Failed (object changed)",
		[NET_HTTP_416] = "HTTP 416 Range Not Satisfiable (object changed)",
		[NET_HTTP_429] = "HTTP 429 Too Many Requests",
		[NET_HTTP_5XX] = "HTTP server error (5xx)",
		[NET_SHORT_BODY] = "short body",
		[NET_BAD_RESPONSE] = "response does not match the request",
		[NET_CHANGED] = "the object changed (another version answered)",
		[NET_OTHER] = "transfer failed",
	};

	if ((unsigned)e >= NET_NR_ERRORS)
		return "unknown network error";
	return names[e];
}

int net_error_to_errno(enum net_error e)
{
	switch (e) {
	case NET_OK:
		return 0;
	case NET_HTTP_412:
	case NET_HTTP_416:
	case NET_CHANGED:
		return -ESTALE;
	case NET_HTTP_404:
		return -ENOENT;
	case NET_HTTP_403:
		return -EACCES;
	default:
		return -EIO;
	}
}

static int parse_u64(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s == end || *s < '0' || *s > '9')
		return -EINVAL;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	*out = v;
	return 0;
}

int net_parse_content_range(const char *value, size_t len, uint64_t *start, uint64_t *end,
	uint64_t *total)
{
	const char *p = value, *e = value + len;
	uint64_t a, b, t;

	while (e > p && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	if (e - p < 6 || strncasecmp(p, "bytes", 5) || (p[5] != ' ' && p[5] != '\t'))
		return -EINVAL;
	p += 6;
	while (p < e && *p == ' ')
		p++;
	if (parse_u64(&p, e, &a) || p == e || *p++ != '-')
		return -EINVAL;
	if (parse_u64(&p, e, &b) || p == e || *p++ != '/')
		return -EINVAL;
	if (parse_u64(&p, e, &t) || p != e)
		return -EINVAL;
	if (a > b || b >= t)
		return -EINVAL;
	*start = a;
	*end = b;
	*total = t;
	return 0;
}

time_t net_parse_http_date(const char *value, size_t len)
{
	char date[64];
	time_t t;

	if (len >= sizeof(date))
		return 0;
	memcpy(date, value, len);
	date[len] = '\0';
	t = curl_getdate(date, NULL);
	return t > 0 ? t : 0;
}

int64_t net_parse_retry_after(const char *value, size_t len)
{
	const char *p = value, *e = value + len;
	uint64_t secs;
	time_t t;

	while (e > p && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	if (p < e && *p >= '0' && *p <= '9') {
		if (parse_u64(&p, e, &secs) || p != e || secs > INT64_MAX / 1000)
			return -1;
		return (int64_t)secs * 1000;
	}
	t = net_parse_http_date(p, (size_t)(e - p));
	if (!t)
		return -1;
	/* A date years ahead asks for more than anyone waits; the caller caps it anyway. */
	if ((int64_t)t - (int64_t)time(NULL) > INT64_MAX / 1000)
		return INT64_MAX;
	return t > time(NULL) ? ((int64_t)t - (int64_t)time(NULL)) * 1000 : 0;
}

void net_format_http_date(int64_t t, char *buf, size_t buflen)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
		"Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	/* Built by hand: strftime's names follow the locale, HTTP's do not. */
	snprintf(buf, buflen, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
		months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *net_header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	size_t n = strlen(name);
	const char *v, *e = line + len;

	if (len <= n || strncasecmp(line, name, n) || line[n] != ':')
		return NULL;
	v = line + n + 1;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*vlen = (size_t)(e - v);
	return v;
}
