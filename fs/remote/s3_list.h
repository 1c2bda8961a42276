/* Parsers for S3's XML replies (with expat): ListObjectsV2 pages and Error documents, and the
 * classification of S3 error codes. remote_s3.c feeds them response bodies. */
#ifndef FERRY_S3_LIST_H
#define FERRY_S3_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fs/remote/net.h"

/* Limits that keep a hostile or broken server from costing unbounded memory. */
#define S3_LIST_MAX_TEXT_BYTES 4096   /* one element's text (keys are at most 1024 bytes) */
#define S3_LIST_MAX_ENTRIES    100000 /* Contents + CommonPrefixes in one page */
#define S3_LIST_MAX_DEPTH      16

struct s3_list_object {
	char *key;        /* decoded (EncodingType url undone); may hold a NUL byte */
	size_t key_bytes; /* because of that */
	uint64_t size;
	struct timespec mtime; /* 0 when the server sent none */
	char *etag;            /* quotes kept; NULL when none */
};

struct s3_list_prefix {
	char *prefix;
	size_t prefix_bytes;
};

/* One page of a ListObjectsV2 reply; everything owned (s3_list_page_done frees). */
struct s3_list_page {
	struct s3_list_object *objects;
	size_t nr_objects;
	struct s3_list_prefix *prefixes;
	size_t nr_prefixes;
	bool is_truncated;
	char *next_token; /* NULL when none */
	long key_count;   /* -1 when absent */
};

/* Parses one page. -EBADMSG with a reason in errbuf for anything that is not a well-formed,
 * plausible ListBucketResult (a DOCTYPE or entity declaration, nesting deeper than
 * S3_LIST_MAX_DEPTH, a text over S3_LIST_MAX_TEXT_BYTES, a Contents without Key or with a bad
 * Size, IsTruncated without a token); -EREMOTEIO when it is an Error document. */
int s3_list_parse(const char *xml, size_t len, struct s3_list_page *page, char *errbuf,
	size_t errlen);
void s3_list_page_done(struct s3_list_page *page);

/* An S3 Error document's Code and Message (truncated to fit; "" when absent). */
struct s3_error_doc {
	char code[64];
	char message[256];
	char region[64]; /* <Region>, sent with AuthorizationHeaderMalformed */
};

/* 0 when xml is an Error document, -EBADMSG otherwise. */
int s3_error_parse(const char *xml, size_t len, struct s3_error_doc *out);

/* What a failed request means. */
enum s3_error {
	S3_ERR_NONE = 0,
	S3_ERR_ACCESS_DENIED, /* AccessDenied, 403 */
	S3_ERR_BAD_SIGNATURE, /* SignatureDoesNotMatch: wrong secret key */
	S3_ERR_BAD_KEY_ID,    /* InvalidAccessKeyId: unknown access key */
	S3_ERR_EXPIRED,       /* ExpiredToken, RequestTimeTooSkewed */
	S3_ERR_NO_SUCH_BUCKET,
	S3_ERR_NO_SUCH_KEY,  /* NoSuchKey, 404 */
	S3_ERR_WRONG_REGION, /* PermanentRedirect, AuthorizationHeaderMalformed, 301 */
	S3_ERR_PRECONDITION, /* 412: the object changed */
	S3_ERR_RANGE,        /* 416 */
	S3_ERR_SLOW_DOWN,    /* 503 SlowDown, 500 InternalError, RequestTimeout: retry */
	S3_ERR_OTHER,
};

/* Classifies a reply by its Code (may be NULL or "") and HTTP status. */
enum s3_error s3_error_classify(const char *code, long http_status);

/* The net_error (fs/net.h) that e counts as, so that S3 replies follow the same retry policy
 * (net_error_is_retryable) and -errno mapping (net_error_to_errno) as every other transfer:
 * SlowDown, InternalError, ServiceUnavailable, RequestTimeout and other 5xx are NET_HTTP_5XX,
 * retried with backoff; AccessDenied, a wrong signature or key and an expired token are
 * NET_HTTP_403, NoSuchBucket and NoSuchKey NET_HTTP_404, a wrong region NET_HTTP_4XX, all
 * final; 412 and 416 stay NET_HTTP_412 and NET_HTTP_416 (the object changed). */
enum net_error s3_error_to_net(enum s3_error e, long http_status);

#endif
