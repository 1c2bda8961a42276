/* The identity of a source: the name of its cache directory, a hash of everything that
 * determines the bytes the source serves, so two sources share a cache only when they serve
 * the same bytes. The daemon (daemon.c) computes it before it asks the source anything, so a
 * mount with the source down finds its own cache and no other. */
#ifndef FERRY_SOURCE_ID_H
#define FERRY_SOURCE_ID_H

#include <stddef.h>
#include <stdint.h>

/* What the identity is made of. The S3 settings are the resolved ones (aws_config_load), not
 * only the command line's: AWS_REGION or a profile's endpoint_url change the bytes too. */
struct source_id_input {
	const char *source;     /* http(s)://..., s3://bucket/prefix, or a local directory */
	const char *endpoint;   /* S3: http(s)://host[:port]; NULL: AWS's endpoint for region */
	const char *region;     /* S3: NULL means us-east-1, as aws_config_load */
	const char *addressing; /* S3: "path", "virtual", "auto" or NULL (auto) */
	uint32_t chunk_bytes;   /* the cache's chunk size: another one is another cache */
};

/* The canonical text of the identity, one "name value" line per component, newly allocated
 * in *key:
 *   http(s): scheme, host (lower case), port (the scheme's default when none), path with
 *            its trailing slashes removed, query (exact; it may select the bytes);
 *   s3:      endpoint (scheme://host:port, lower case, AWS's from the region when none),
 *            region, addressing (auto when none), bucket, prefix (leading and trailing
 *            slashes removed);
 *   local:   the realpath of the directory;
 * and for all, chunk_bytes. The fragment of a URL is not sent and is left out. -EINVAL with
 * a one-line reason in errbuf for a source or endpoint that does not parse, -errno of
 * realpath for a local directory that cannot be resolved, -ENOMEM. */
int source_id_key(const struct source_id_input *in, char **key, char *errbuf, size_t errlen);

/* XXH3-64 of source_id_key's text: the cache directory's name is this in 16 hex digits. */
int source_id(const struct source_id_input *in, uint64_t *id, char *errbuf, size_t errlen);

#endif
