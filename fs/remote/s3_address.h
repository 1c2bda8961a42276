/* Where the requests for one S3 bucket go: the endpoint, the Host header and the addressing
 * style (path or virtual host), shared by the S3 source (remote_s3.c) and the tier's objects
 * (s3_object.c). */
#ifndef FERRY_S3_ADDRESS_H
#define FERRY_S3_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

struct aws_config;
struct curl_slist;
struct s3_kv;

struct s3_address {
	char *bucket;
	char *endpoint;    /* http(s)://host[:port], no trailing '/': for messages */
	char *scheme_host; /* what the bucket's URLs start with */
	char *host;        /* the Host header, a default port left out (as curl and botocore do) */
	bool virtual_host; /* the bucket is in the host name */
};

/* From cfg's endpoint (none: AWS for cfg's region) and addressing (path, virtual, or auto:
 * path style except on AWS with a bucket that can be a DNS label). -EINVAL with a one-line
 * reason that calls the endpoint what (e.g. "S3 endpoint"), -ENOMEM. */
int s3_address_make(struct s3_address *a, const struct aws_config *cfg, const char *bucket,
	const char *what, char *errbuf, size_t errlen);
void s3_address_done(struct s3_address *a);
/* The request path of key within the bucket (NULL or "": the bucket itself), not yet
 * encoded; malloc'd, NULL without memory. */
char *s3_address_path(const struct s3_address *a, const char *key);
/* A signed request of method on key (NULL: the bucket) with the query and extra headers
 * (payload_hash NULL: an empty body), with cfg's region and credentials (none when anonymous):
 * fills *url and *hdrs (the caller frees them); 0 or -errno. */
int s3_address_request(const struct s3_address *a, const struct aws_config *cfg, const char *method,
	const char *key, const struct s3_kv *query, size_t nr_query, const struct s3_kv *extra,
	size_t nr_extra, const char *payload_hash, char **url, struct curl_slist **hdrs);
/* Bucket names that can be a DNS label under TLS wildcard certificates: virtual-host style
 * works for them. Dotted names break *.s3.amazonaws.com certificates, so they go path style. */
bool s3_bucket_dns_safe(const char *bucket);

#endif
