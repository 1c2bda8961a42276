/* One synchronous HTTP client per source (see net_client.h): the share, a pool of easy handles,
 * a size-capped body, the headers the backends read, and the words for a failed transport. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/net_client.h"
#include "fs/remote/remote.h"

#define NET_POOL_MAX 8 /* idle easy handles kept; more callers at once get fresh ones */

/* Everything but the pool is set by net_client_new and read-only afterwards. */
struct net_client {
	struct remote_options opt; /* ca_file points to ca_file below */
	char *ca_file;
	CURLSH *share; /* DNS cache and TLS sessions of every handle of the source */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_lock;
	CURL *pool[NET_POOL_MAX]; /* protected by pool_lock */
	int nr_pool;              /* protected by pool_lock */
};

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct net_client *c = arg;

	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct net_client *c = arg;

	pthread_mutex_unlock(&c->share_locks[data]);
}

struct net_client *net_client_new(const struct remote_options *opt)
{
	struct net_client *c = calloc(1, sizeof(*c));
	int i;

	if (!c)
		return NULL;
	pthread_mutex_init(&c->pool_lock, NULL);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	if (opt) {
		c->opt.insecure = opt->insecure;
		c->opt.connect_timeout_ms = opt->connect_timeout_ms;
		c->opt.low_speed_time_s = opt->low_speed_time_s;
		c->opt.verbose = opt->verbose;
		if (opt->ca_file && !(c->ca_file = strdup(opt->ca_file)))
			goto err;
		c->opt.ca_file = c->ca_file;
	}
	c->share = curl_share_init();
	if (!c->share)
		goto err;
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return c;
err:
	net_client_free(c);
	return NULL;
}

void net_client_free(struct net_client *c)
{
	int i;

	if (!c)
		return;
	for (i = 0; i < c->nr_pool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	pthread_mutex_destroy(&c->pool_lock);
	free(c->ca_file);
	free(c);
}

void net_client_setup(struct net_client *c, CURL *easy)
{
	net_easy_setup(easy, &c->opt);
	curl_easy_setopt(easy, CURLOPT_SHARE, c->share);
}

static CURL *pool_get(struct net_client *c)
{
	CURL *e = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->nr_pool)
		e = c->pool[--c->nr_pool];
	pthread_mutex_unlock(&c->pool_lock);
	return e ? e : curl_easy_init();
}

/* A pooled handle keeps its connections: the next request to the server skips the handshake. */
static void pool_put(struct net_client *c, CURL *e)
{
	pthread_mutex_lock(&c->pool_lock);
	if (c->nr_pool < NET_POOL_MAX) {
		c->pool[c->nr_pool++] = e;
		e = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	curl_easy_cleanup(e);
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
	struct net_reply *rep = arg;
	size_t len = size * n, vl;
	const char *v;

	if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
		/* A new response (after 100 Continue): forget the previous one's headers. */
		free(rep->etag);
		free(rep->location);
		rep->etag = rep->location = NULL;
		rep->last_modified = 0;
		rep->has_length = false;
		rep->retry_after_ms = -1;
	} else if ((v = net_header_value(line, len, "ETag", &vl))) {
		free(rep->etag);
		rep->etag = vl ? strndup(v, vl) : NULL;
		if (rep->etag && !remote_etag_is_version(rep->etag)) {
			/* `*` pins nothing: version by Last-Modified and size instead */
			free(rep->etag);
			rep->etag = NULL;
		}
	} else if ((v = net_header_value(line, len, "Location", &vl))) {
		free(rep->location);
		rep->location = strndup(v, vl);
	} else if ((v = net_header_value(line, len, "Last-Modified", &vl))) {
		rep->last_modified = net_parse_http_date(v, vl);
	} else if ((v = net_header_value(line, len, "Content-Length", &vl))) {
		char *e;

		rep->content_length = strtoull(v, &e, 10);
		rep->has_length = vl && e == v + vl && v[0] >= '0' && v[0] <= '9';
	} else if ((v = net_header_value(line, len, "Retry-After", &vl))) {
		rep->retry_after_ms = net_parse_retry_after(v, vl);
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct net_reply *rep = arg;
	size_t len = size * n;

	if (len > rep->max_body_bytes - rep->body_bytes) {
		rep->too_large = true;
		return 0;
	}
	if (rep->body_bytes + len + 1 > rep->body_cap) {
		size_t cap = rep->body_cap ? rep->body_cap : 16384;
		char *b;

		while (cap < rep->body_bytes + len + 1)
			cap *= 2;
		b = realloc(rep->body, cap);
		if (!b)
			return 0;
		rep->body = b;
		rep->body_cap = cap;
	}
	memcpy(rep->body + rep->body_bytes, data, len);
	rep->body_bytes += len;
	rep->body[rep->body_bytes] = '\0';
	return len;
}

void net_request_start(struct net_client *c, CURL *easy, const struct net_request *req,
	struct net_reply *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->retry_after_ms = -1;
	rep->max_body_bytes = req->max_body_bytes;
	curl_easy_reset(easy);
	net_client_setup(c, easy);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_NOBODY, req->head ? 1L : 0L);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	if (req->timeout_s)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT, req->timeout_s);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, rep);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, rep);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, rep->curl_err);
}

enum net_error net_request_finish(CURL *easy, CURLcode code, struct net_reply *rep)
{
	/* The handle outlives this reply in the pool: it must not write into it any more. */
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	rep->code = rep->too_large ? CURLE_FILESIZE_EXCEEDED : code;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &rep->status);
	curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &rep->os_errno);
	return net_error_of(rep->code, rep->status);
}

enum net_error net_client_request(struct net_client *c, const struct net_request *req,
	struct net_reply *rep)
{
	CURL *easy = pool_get(c);
	enum net_error ne;

	if (!easy) {
		memset(rep, 0, sizeof(*rep));
		rep->code = CURLE_OUT_OF_MEMORY;
		return NET_OTHER;
	}
	net_request_start(c, easy, req, rep);
	ne = net_request_finish(easy, curl_easy_perform(easy), rep);
	pool_put(c, easy);
	return ne;
}

void net_reply_done(struct net_reply *rep)
{
	free(rep->body);
	free(rep->etag);
	free(rep->location);
	memset(rep, 0, sizeof(*rep));
}

void net_reply_describe_transport(const struct net_reply *rep, const char *server, char *errbuf,
	size_t errlen)
{
	const char *why = rep->curl_err[0] ? rep->curl_err : curl_easy_strerror(rep->code);

	if (rep->code == CURLE_FILESIZE_EXCEEDED) {
		snprintf(errbuf, errlen, "%s: a reply over %zu bytes", server, rep->max_body_bytes);
		return;
	}
	switch (net_error_from_curl(rep->code)) {
	case NET_CONNECT:
		/* "Connection refused" says it all; curl's own text repeats host and port. */
		snprintf(errbuf, errlen, "cannot connect to %s: %s", server,
			rep->os_errno ? strerror((int)rep->os_errno) : why);
		break;
	case NET_RESOLVE:
		snprintf(errbuf, errlen, "cannot resolve the host of %s: %s", server, why);
		break;
	case NET_TLS:
		snprintf(errbuf, errlen,
			"TLS with %s failed: %s (for a private CA, pass --ca-file)", server, why);
		break;
	case NET_TIMEOUT:
		snprintf(errbuf, errlen, "timed out talking to %s: %s", server, why);
		break;
	default:
		snprintf(errbuf, errlen, "%s: %s", server, why);
	}
}
