/* The identity of a source (see source_id.h): canonical text of what determines its bytes,
 * and the hash of it that names the source's cache directory under the cache root. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "fs/remote/url.h"
#include "fs/source_id.h"

/* Bumped when what goes into the key changes, so an old cache is never read as a new one. */
#define SOURCE_ID_FORMAT "ferry-source-id 1"

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static void strip_trailing_slashes(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
}

static int key_http(const struct source_id_input *in, char **key, char *errbuf, size_t errlen)
{
	struct url u;
	int ret;

	ret = url_parse(&u, in->source, errbuf, errlen);
	if (ret)
		return ret;
	lower(u.host);
	strip_trailing_slashes(u.path);
	/* The query is kept as written: it may name another object ("?version=2") and the
	 * server, not us, knows which spellings are the same. */
	if (asprintf(key,
		    SOURCE_ID_FORMAT "\ntype http\nscheme %s\nhost %s\nport %u\npath %s\n"
				     "query %s%s\nchunk_bytes %u\n",
		    u.scheme, u.host, u.port, u.path, u.query ? "?" : "", u.query ? u.query : "",
		    in->chunk_bytes) < 0) {
		*key = NULL;
		ret = -ENOMEM;
	}
	url_done(&u);
	return ret;
}

static int key_s3(const struct source_id_input *in, char **key, char *errbuf, size_t errlen)
{
	const char *region = in->region && *in->region ? in->region : "us-east-1";
	const char *addressing = in->addressing && *in->addressing ? in->addressing : "auto";
	const char *b = in->source + 5, *slash = strchr(b, '/');
	char *endpoint = NULL, *bucket = NULL, *prefix = NULL;
	struct url u = { 0 };
	int ret;

	if (in->endpoint && *in->endpoint)
		endpoint = strdup(in->endpoint);
	else if (asprintf(&endpoint, "https://s3.%s.amazonaws.com", region) < 0)
		endpoint = NULL;
	bucket = slash ? strndup(b, (size_t)(slash - b)) : strdup(b);
	prefix = strdup(slash ? slash + strspn(slash, "/") : "");
	if (!endpoint || !bucket || !prefix) {
		ret = -ENOMEM;
		goto out;
	}
	if (!*bucket) {
		snprintf(errbuf, errlen, "no bucket in '%s'", in->source);
		ret = -EINVAL;
		goto out;
	}
	strip_trailing_slashes(prefix);
	ret = url_parse(&u, endpoint, errbuf, errlen);
	if (ret)
		goto out;
	strip_trailing_slashes(u.path);
	if (*u.path || u.query) {
		snprintf(errbuf, errlen, "bad S3 endpoint '%s': expected http(s)://host[:port]",
			endpoint);
		ret = -EINVAL;
		goto out;
	}
	lower(u.host);
	if (asprintf(key,
		    SOURCE_ID_FORMAT "\ntype s3\nendpoint %s://%s:%u\nregion %s\naddressing %s\n"
				     "bucket %s\nprefix %s\nchunk_bytes %u\n",
		    u.scheme, u.host, u.port, region, addressing, bucket, prefix,
		    in->chunk_bytes) < 0) {
		*key = NULL;
		ret = -ENOMEM;
	}
out:
	url_done(&u);
	free(endpoint);
	free(bucket);
	free(prefix);
	return ret;
}

static int key_dir(const struct source_id_input *in, char **key, char *errbuf, size_t errlen)
{
	char *real = realpath(in->source, NULL);
	int ret = 0;

	if (!real) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot resolve source directory %s: %s", in->source,
			strerror(errno));
		return ret;
	}
	if (asprintf(key, SOURCE_ID_FORMAT "\ntype dir\npath %s\nchunk_bytes %u\n", real,
		    in->chunk_bytes) < 0) {
		*key = NULL;
		ret = -ENOMEM;
	}
	free(real);
	return ret;
}

int source_id_key(const struct source_id_input *in, char **key, char *errbuf, size_t errlen)
{
	int ret;

	*key = NULL;
	if (!strncasecmp(in->source, "http://", 7) || !strncasecmp(in->source, "https://", 8))
		ret = key_http(in, key, errbuf, errlen);
	else if (!strncmp(in->source, "s3://", 5))
		ret = key_s3(in, key, errbuf, errlen);
	else if (strstr(in->source, "://")) {
		snprintf(errbuf, errlen, "unsupported source scheme");
		ret = -EINVAL;
	} else
		ret = key_dir(in, key, errbuf, errlen);
	if (ret == -ENOMEM)
		snprintf(errbuf, errlen, "out of memory");
	return ret;
}

int source_id(const struct source_id_input *in, uint64_t *id, char *errbuf, size_t errlen)
{
	char *key;
	int ret = source_id_key(in, &key, errbuf, errlen);

	if (ret)
		return ret;
	*id = XXH3_64bits(key, strlen(key));
	free(key);
	return 0;
}
