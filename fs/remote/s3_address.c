/* Endpoint, Host header and addressing style of an S3 bucket (s3_address.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "fs/remote/aws_config.h"
#include "fs/remote/s3_address.h"
#include "fs/remote/s3_sign.h"

bool s3_bucket_dns_safe(const char *b)
{
	size_t n = strlen(b);

	if (n < 3 || n > 63 || b[0] == '-' || b[n - 1] == '-')
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return true;
}

/* Whether the bucket goes into the host name; -EINVAL with the reason in errbuf. */
static int addressing(const struct aws_config *cfg, const char *bucket, const char *host,
	bool *virtual_host, char *errbuf, size_t errlen)
{
	const char *mode = cfg->addressing ? cfg->addressing : "auto";
	bool aws = !cfg->endpoint || strstr(host, ".amazonaws.com");

	if (!strcmp(mode, "virtual")) {
		if (!s3_bucket_dns_safe(bucket) && strchr(bucket, '_')) {
			snprintf(errbuf, errlen,
				"bucket '%s' cannot be a host name: use --addressing path", bucket);
			return -EINVAL;
		}
		*virtual_host = true;
	} else if (!strcmp(mode, "path")) {
		*virtual_host = false;
	} else if (!strcmp(mode, "auto")) {
		*virtual_host = aws && s3_bucket_dns_safe(bucket);
	} else {
		snprintf(errbuf, errlen,
			"bad addressing style '%s': expected path, virtual or auto", mode);
		return -EINVAL;
	}
	return 0;
}

int s3_address_make(struct s3_address *a, const struct aws_config *cfg, const char *bucket,
	const char *what, char *errbuf, size_t errlen)
{
	const char *scheme = NULL, *hostport = NULL;
	char *colon;
	size_t n;
	int err;

	memset(a, 0, sizeof(*a));
	a->bucket = strdup(bucket);
	if (cfg->endpoint)
		a->endpoint = strdup(cfg->endpoint);
	else if (asprintf(&a->endpoint, "https://s3.%s.amazonaws.com", cfg->region) < 0)
		a->endpoint = NULL;
	if (!a->bucket || !a->endpoint)
		goto nomem;
	n = strlen(a->endpoint);
	while (n > 0 && a->endpoint[n - 1] == '/')
		a->endpoint[--n] = '\0';
	if (!strncmp(a->endpoint, "https://", 8)) {
		scheme = "https";
		hostport = a->endpoint + 8;
	} else if (!strncmp(a->endpoint, "http://", 7)) {
		scheme = "http";
		hostport = a->endpoint + 7;
	}
	if (!hostport || !*hostport || strpbrk(hostport, "/?#@ ")) {
		snprintf(errbuf, errlen, "bad %s '%s': expected http(s)://host[:port]", what,
			a->endpoint);
		s3_address_done(a);
		return -EINVAL;
	}
	a->host = strdup(hostport);
	if (!a->host)
		goto nomem;
	colon = strrchr(a->host, ':');
	if (colon && !strchr(colon, ']') &&
		((!strcmp(scheme, "http") && !strcmp(colon, ":80")) ||
			(!strcmp(scheme, "https") && !strcmp(colon, ":443"))))
		*colon = '\0';
	err = addressing(cfg, bucket, a->host, &a->virtual_host, errbuf, errlen);
	if (err) {
		s3_address_done(a);
		return err;
	}
	if (a->virtual_host) {
		char *host;

		if (asprintf(&a->scheme_host, "%s://%s.%s", scheme, bucket, hostport) < 0)
			a->scheme_host = NULL;
		if (asprintf(&host, "%s.%s", bucket, a->host) < 0)
			host = NULL;
		free(a->host);
		a->host = host;
	} else if (asprintf(&a->scheme_host, "%s://%s", scheme, hostport) < 0) {
		a->scheme_host = NULL;
	}
	if (a->scheme_host && a->host)
		return 0;
nomem:
	s3_address_done(a);
	snprintf(errbuf, errlen, "out of memory");
	return -ENOMEM;
}

void s3_address_done(struct s3_address *a)
{
	free(a->bucket);
	free(a->endpoint);
	free(a->scheme_host);
	free(a->host);
	memset(a, 0, sizeof(*a));
}

char *s3_address_path(const struct s3_address *a, const char *key)
{
	char *p;
	int n;

	if (!key)
		key = "";
	if (a->virtual_host)
		n = asprintf(&p, "/%s", key);
	else if (!*key)
		n = asprintf(&p, "/%s", a->bucket);
	else
		n = asprintf(&p, "/%s/%s", a->bucket, key);
	return n < 0 ? NULL : p;
}

int s3_address_request(const struct s3_address *a, const struct aws_config *cfg, const char *method,
	const char *key, const struct s3_kv *query, size_t nr_query, const struct s3_kv *extra,
	size_t nr_extra, const char *payload_hash, char **url, struct curl_slist **hdrs)
{
	struct s3_signed sig;
	struct curl_slist *l = NULL;
	char *path = s3_address_path(a, key);
	int err;

	*url = NULL;
	*hdrs = NULL;
	if (!path)
		return -ENOMEM;
	struct s3_sign_input in = {
		.method = method,
		.host = a->host,
		.path = path,
		.query = query,
		.nr_query = nr_query,
		.headers = extra,
		.nr_headers = nr_extra,
		.payload_hash = payload_hash,
		.region = cfg->region,
		.when = time(NULL),
		.cred = cfg->anonymous ? NULL : &cfg->cred,
	};
	err = s3_sign_request(&in, &sig);
	free(path);
	if (err)
		return err;
	err = -ENOMEM;
	if (asprintf(url, "%s%s%s%s", a->scheme_host, sig.encoded_path,
		    sig.encoded_query[0] ? "?" : "", sig.encoded_query) < 0) {
		*url = NULL;
		goto out;
	}
	for (size_t i = 0; i < sig.nr_header_lines; i++) {
		struct curl_slist *n = curl_slist_append(l, sig.header_lines[i]);

		if (!n)
			goto out;
		l = n;
	}
	*hdrs = l;
	l = NULL;
	err = 0;
out:
	curl_slist_free_all(l);
	if (err) {
		free(*url);
		*url = NULL;
	}
	s3_signed_done(&sig);
	return err;
}
