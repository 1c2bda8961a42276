/* The backend table lookup and the helpers every backend shares. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/remote/remote.h"

void remote_entry_done(struct remote_entry *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->etag);
	free(e->link_target);
	e->name = e->etag = e->link_target = NULL;
}

bool remote_etag_is_version(const char *etag)
{
	size_t n;

	/* A weak tag promises equivalent content, not the same bytes, and If-Match compares
	 * strongly (RFC 9110): it would fail every read, or pass another representation. */
	if (!etag || !strncmp(etag, "W/", 2))
		return false;
	n = strlen(etag);
	if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
		etag++;
		n -= 2;
	}
	return n > 0 && !(n == 1 && etag[0] == '*');
}

const struct remote_ops *remote_ops_for(const char *source, char *errbuf, size_t errlen)
{
	struct stat st;

	if (!strncmp(source, "http://", 7) || !strncmp(source, "https://", 8))
		return &remote_http_ops;
	if (!strncmp(source, "s3://", 5))
		return &remote_s3_ops;
	if (strstr(source, "://")) {
		snprintf(errbuf, errlen,
			"unsupported source '%s': expected http://, https://, s3:// or a local directory",
			source);
		return NULL;
	}
	if (stat(source, &st) == 0 && S_ISDIR(st.st_mode))
		return &remote_dir_ops;
	snprintf(errbuf, errlen,
		"source '%s' is not a URL (http://, https://, s3://) nor an existing directory",
		source);
	return NULL;
}
