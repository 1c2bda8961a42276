/* AWS Signature Version 4 for S3 requests (HMAC-SHA256 with OpenSSL): remote_s3.c builds a
 * request here and gets back the encoded URL parts and the headers to send. */
#ifndef FERRY_S3_SIGN_H
#define FERRY_S3_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define S3_EMPTY_SHA256     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S3_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct aws_credentials;

/* A name and a value, both plain (not percent-encoded). */
struct s3_kv {
	const char *name;
	const char *value;
};

/* What is signed. path and the query are given decoded; the signer encodes them the way S3
 * wants (RFC 3986 unreserved characters kept, '/' kept in the path, everything else %XX) and
 * returns the encoding, so the URL sent and the URL signed cannot differ. */
struct s3_sign_input {
	const char *method;        /* "GET", "HEAD" */
	const char *host;          /* the Host header: "bucket.s3.amazonaws.com", "127.0.0.1:80" */
	const char *path;          /* "/bucket/key" or "/key"; starts with '/' */
	const struct s3_kv *query; /* a value may be "" (e.g. "uploads=") */
	size_t nr_query;
	const struct s3_kv *headers; /* more headers to sign (range, if-match); any case */
	size_t nr_headers;
	const char *payload_hash; /* NULL: hash of the empty body; or S3_UNSIGNED_PAYLOAD */
	const char *region;
	const char *service;                /* NULL: "s3" */
	time_t when;                        /* the signing time (UTC seconds) */
	const struct aws_credentials *cred; /* NULL: not signed (anonymous) */
};

/* The signed request. Every string is owned here; s3_signed_done frees them. The header
 * lines ("Name: value") are what to send besides Host, in canonical order. */
struct s3_signed {
	char *encoded_path;      /* the canonical URI, for the URL too */
	char *encoded_query;     /* the canonical query string ("" when none), for the URL too */
	char *canonical_request; /* NULL when anonymous */
	char *string_to_sign;    /* NULL when anonymous */
	char *authorization;     /* the Authorization header's value; NULL when anonymous */
	char **header_lines;     /* x-amz-* headers, the extra headers, and Authorization */
	size_t nr_header_lines;
	char amz_date[17]; /* 20130524T000000Z */
};

/* Signs in; 0 or -ENOMEM / -EINVAL (a header name or value with a newline, no region). */
int s3_sign_request(const struct s3_sign_input *in, struct s3_signed *out);
void s3_signed_done(struct s3_signed *s);

/* Percent-encodes s as SigV4 wants: RFC 3986 unreserved characters kept, and '/' kept when
 * keep_slash; malloc'd, NULL when out of memory. */
char *s3_uri_encode(const char *s, bool keep_slash);

/* Lower-case hex SHA-256 of data into hex[65]. */
void s3_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
