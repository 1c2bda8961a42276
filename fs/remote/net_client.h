/* The synchronous side of the HTTP-family backends (remote_http.c, remote_s3.c): one client per
 * source holds the share (DNS cache, TLS sessions) and a pool of easy handles, and runs the
 * requests that listings, stats and open checks make, one at a time per caller. The fetch
 * engine's ranged GETs run on its own multi handle and take only the share (net_client_setup). */
#ifndef FERRY_NET_CLIENT_H
#define FERRY_NET_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <curl/curl.h>

#include "fs/remote/net.h"

struct remote_options;
struct net_client;

/* One request. */
struct net_request {
	const char *url;
	bool head;                        /* HEAD: headers only */
	const struct curl_slist *headers; /* extra request headers, or NULL */
	size_t max_body_bytes;            /* a longer body fails the request */
	long timeout_s;                   /* the whole request; 0: only the low-speed limit */
};

/* What came back: a transport failure (code), or an HTTP reply (status, headers, body). Strings
 * are owned by the reply (net_reply_done). */
struct net_reply {
	CURLcode code; /* CURLE_OK when an HTTP reply came */
	long status;   /* HTTP status; 0 without a reply */
	long os_errno; /* errno of a failed connect, 0 when none */
	char *body;    /* NUL-terminated, NULL when empty */
	size_t body_bytes;
	char *etag;     /* only one that names a version (remote_etag_is_version), else NULL */
	char *location; /* of a 3xx, else NULL */
	time_t last_modified; /* 0 when not sent */
	bool has_length;
	uint64_t content_length; /* when has_length */
	int64_t retry_after_ms;  /* what a Retry-After asks for, -1 when none */
	char curl_err[CURL_ERROR_SIZE];
	/* private to net_client.c */
	size_t body_cap, max_body_bytes;
	bool too_large;
};

/* A client with opt's TLS settings, timeouts and trace level (other fields are not used, and
 * ca_file is copied). NULL when out of memory. Call net_global_init first. */
struct net_client *net_client_new(const struct remote_options *opt);
void net_client_free(struct net_client *c);

/* The common setup of an easy handle (net_easy_setup with the client's options) and the share:
 * for a handle the caller drives itself, such as the fetch engine's. */
void net_client_setup(struct net_client *c, CURL *easy);

/* One blocking request on a pooled handle. Returns what the reply means (net_error_of);
 * rep is filled either way, and must be freed with net_reply_done. */
enum net_error net_client_request(struct net_client *c, const struct net_request *req,
	struct net_reply *rep);

/* The same in two steps, for a caller that runs several requests at once on its own multi
 * handle: net_request_start sets up easy (which the caller then adds), net_request_finish
 * reads the result once the transfer is done (code: the transfer's CURLcode). */
void net_request_start(struct net_client *c, CURL *easy, const struct net_request *req,
	struct net_reply *rep);
enum net_error net_request_finish(CURL *easy, CURLcode code, struct net_reply *rep);

void net_reply_done(struct net_reply *rep);

/* A one-line reason for a request that got no HTTP reply (rep->code is not CURLE_OK), in words
 * a user can act on: "cannot connect to SERVER: Connection refused", a TLS failure with a
 * pointer to --ca-file, a timeout, a reply over the size cap. server names the host
 * ("host:port" or an endpoint URL), never a query, since the line reaches logs. */
void net_reply_describe_transport(const struct net_reply *rep, const char *server, char *errbuf,
	size_t errlen);

#endif
