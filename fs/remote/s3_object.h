/* Whole-object GETs and PUTs with user metadata (x-amz-meta-*) on one S3 bucket, signed with
 * SigV4: what the shared chunk tier (fs/tier.c) stores its chunks with. Each call runs on an
 * easy handle the caller owns and reuses (its connection stays open between requests). */
#ifndef FERRY_S3_OBJECT_H
#define FERRY_S3_OBJECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <curl/curl.h>

#include "fs/remote/net.h"
#include "fs/remote/s3_sign.h"

struct aws_config_request;
struct remote_options;
struct s3_bucket;

/* The x-amz-meta-* headers of a reply that we keep, at most this many. */
#define S3_OBJECT_MAX_META 16

/* What a GET or PUT came back with. meta names are the part after "x-amz-meta-", lower case;
 * names and values are owned here (s3_object_reply_done). */
struct s3_object_reply {
	enum net_error ne; /* NET_OK for a 2xx */
	long status;       /* HTTP status, 0 when no reply came */
	char s3_code[64];  /* the Error document's Code, "" when none */
	struct s3_kv meta[S3_OBJECT_MAX_META];
	size_t nr_meta;
	size_t body_bytes; /* bytes written into the caller's buffer */
	bool too_large;    /* the body was longer than the buffer (the GET failed) */
	char curl_err[CURL_ERROR_SIZE];
	/* private to s3_object.c */
	char *buf;
	size_t cap;
	char err_body[2048];
	size_t err_bytes;
};

/* Resolves the settings (req: profile, region, endpoint; credentials from the AWS chain) for
 * bucket and makes its client. opt gives TLS settings. -errno with a one-line reason. */
int s3_bucket_open(struct s3_bucket **out, const char *bucket, const struct aws_config_request *req,
	const struct remote_options *opt, char *errbuf, size_t errlen);
void s3_bucket_free(struct s3_bucket *b);
/* Transfers of b stop (as failures) soon after *flag turns true: a daemon that stops does not
 * wait out the timeouts. Call before any request. */
void s3_bucket_set_abort(struct s3_bucket *b, const atomic_bool *flag);
/* "http://host:port" of the endpoint, for messages. */
const char *s3_bucket_endpoint(const struct s3_bucket *b);

/* Lists at most one key under prefix: may we read the bucket, does it exist? 0; -ENOENT (no
 * such bucket), -EACCES (403: credentials or policy), -EHOSTUNREACH (no reply: refused,
 * timeout, unresolved), -EIO (another reply), each with a one-line reason in errbuf. */
int s3_bucket_check(struct s3_bucket *b, CURL *easy, const char *prefix, long timeout_ms,
	char *errbuf, size_t errlen);

/* GETs key into buf (cap bytes at most; a longer object fails with too_large). timeout_ms
 * bounds the whole request. Returns rep->ne. */
enum net_error s3_object_get(struct s3_bucket *b, CURL *easy, const char *key, void *buf,
	size_t cap, long timeout_ms, struct s3_object_reply *rep);
/* PUTs len bytes of buf as key with the metadata (names without "x-amz-meta-"); the payload
 * is sent as UNSIGNED-PAYLOAD (the headers are signed). Returns rep->ne. */
enum net_error s3_object_put(struct s3_bucket *b, CURL *easy, const char *key, const void *buf,
	size_t len, const struct s3_kv *meta, size_t nr_meta, long timeout_ms,
	struct s3_object_reply *rep);
void s3_object_reply_done(struct s3_object_reply *rep);

#endif
