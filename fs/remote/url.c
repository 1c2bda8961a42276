/* http(s) URL parsing, percent-decoding of names found in listings and percent-encoding of the
 * paths the HTTP backend requests. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "fs/remote/url.h"

void url_done(struct url *u)
{
	if (!u)
		return;
	free(u->scheme);
	free(u->host);
	free(u->path);
	free(u->query);
	memset(u, 0, sizeof(*u));
}

static bool is_http_url(const char *s)
{
	return !strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8);
}

char *url_redact(const char *s)
{
	const char *auth, *auth_end, *at = NULL, *q;
	char *out;

	if (!is_http_url(s))
		return strdup(s);
	/* A user:password@ (which url_parse refuses, naming the URL) is a secret too. */
	auth = strstr(s, "://") + 3;
	auth_end = auth + strcspn(auth, "/?#");
	for (const char *p = auth; p < auth_end; p++)
		if (*p == '@')
			at = p;
	q = strchr(s, '?');
	if (asprintf(&out, "%.*s%s%.*s%s", (int)(auth - s), s, at ? URL_REDACTED : "",
		    (int)((q ? q : s + strlen(s)) - (at ? at : auth)), at ? at : auth,
		    q ? "?" URL_REDACTED : "") < 0)
		return NULL;
	return out;
}

bool url_redact_in_place(char *s)
{
	char *q = is_http_url(s) ? strchr(s, '?') : NULL;
	size_t len, n;

	if (!q || !q[1])
		return false;
	q++;
	len = strlen(q);
	n = len < sizeof(URL_REDACTED) - 1 ? len : sizeof(URL_REDACTED) - 1;
	memcpy(q, URL_REDACTED, n);
	memset(q + n, 0, len - n);
	return true;
}

/* The one-line reason for a bad URL, which names the URL without its query (a token). */
static int bad_url(char *errbuf, size_t errlen, const char *why, const char *s)
{
	char *shown = url_redact(s);

	/* Control bytes would split the line (or forge another one in a log). */
	for (char *c = shown; c && *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	snprintf(errbuf, errlen, "%s: '%s'", why, shown ? shown : "?");
	free(shown);
	return -EINVAL;
}

int url_parse(struct url *u, const char *s, char *errbuf, size_t errlen)
{
	const char *p, *auth, *auth_end, *host_end, *path;
	unsigned long port = 0;
	unsigned default_port;
	size_t i;

	memset(u, 0, sizeof(*u));
	if (!strncasecmp(s, "http://", 7)) {
		u->scheme = strdup("http");
		auth = s + 7;
		default_port = 80;
	} else if (!strncasecmp(s, "https://", 8)) {
		u->scheme = strdup("https");
		auth = s + 8;
		default_port = 443;
	} else {
		return bad_url(errbuf, errlen, "not an http(s) URL", s);
	}
	for (i = 0; s[i]; i++) {
		if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) {
			bad_url(errbuf, errlen, "URL contains a space or control character", s);
			goto err;
		}
	}
	auth_end = auth + strcspn(auth, "/?#");
	if (memchr(auth, '@', (size_t)(auth_end - auth))) {
		bad_url(errbuf, errlen, "URL with user name or password is not supported", s);
		goto err;
	}
	if (*auth == '[') {
		p = memchr(auth, ']', (size_t)(auth_end - auth));
		if (!p) {
			bad_url(errbuf, errlen, "bad IPv6 address in URL", s);
			goto err;
		}
		host_end = p + 1;
	} else {
		host_end = memchr(auth, ':', (size_t)(auth_end - auth));
		if (!host_end)
			host_end = auth_end;
	}
	if (host_end == auth) {
		bad_url(errbuf, errlen, "URL has no host", s);
		goto err;
	}
	if (host_end < auth_end) {
		char *e;

		if (*host_end != ':' || host_end + 1 == auth_end) {
			bad_url(errbuf, errlen, "bad port in URL", s);
			goto err;
		}
		port = strtoul(host_end + 1, &e, 10);
		if (e != auth_end || port == 0 || port > 65535 || host_end[1] < '0' ||
			host_end[1] > '9') {
			bad_url(errbuf, errlen, "bad port in URL", s);
			goto err;
		}
	}
	u->host = strndup(auth, (size_t)(host_end - auth));
	u->port = port ? (unsigned)port : default_port;
	path = auth_end;
	p = path + strcspn(path, "?#");
	if (p == path)
		u->path = strdup("/");
	else if (*path == '/')
		u->path = strndup(path, (size_t)(p - path));
	if (*p == '?')
		u->query = strndup(p + 1, strcspn(p + 1, "#"));
	if (!u->scheme || !u->host || !u->path || (*p == '?' && !u->query)) {
		snprintf(errbuf, errlen, "out of memory");
		url_done(u);
		return -ENOMEM;
	}
	return 0;
err:
	url_done(u);
	return -EINVAL;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int url_decode(const char *in, size_t len, char **out)
{
	char *o = malloc(len + 1);
	size_t i, n = 0;

	if (!o)
		return -ENOMEM;
	for (i = 0; i < len; i++) {
		if (in[i] == '\0')
			goto bad;
		if (in[i] != '%') {
			o[n++] = in[i];
			continue;
		}
		if (i + 2 >= len)
			goto bad;
		{
			int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				goto bad;
			o[n++] = (char)(hi << 4 | lo);
			i += 2;
		}
	}
	o[n] = '\0';
	*out = o;
	return 0;
bad:
	free(o);
	return -EINVAL;
}

size_t url_encode_to(char *o, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
			o[n++] = (char)c;
		} else {
			o[n++] = '%';
			o[n++] = hex[c >> 4];
			o[n++] = hex[c & 15];
		}
	}
	return n;
}

static char *encode(const char *s, bool keep_slash)
{
	char *o = malloc(strlen(s) * 3 + 1);

	if (o)
		o[url_encode_to(o, s, keep_slash)] = '\0';
	return o;
}

char *url_encode_path(const char *path)
{
	return encode(path, true);
}

char *url_encode_component(const char *name)
{
	return encode(name, false);
}

char *url_join(const char *base, const char *rel, bool dir_slash)
{
	char *enc = url_encode_path(rel), *out = NULL;
	size_t bl = strlen(base);

	if (!enc)
		return NULL;
	while (*rel == '/') /* the encoded copy starts with the same slashes */
		rel++;
	if (asprintf(&out, "%s%s%s%s", base, bl && base[bl - 1] == '/' ? "" : "/",
		    enc + strspn(enc, "/"),
		    dir_slash && *enc && enc[strlen(enc) - 1] != '/' ? "/" : "") < 0)
		out = NULL;
	free(enc);
	return out;
}

bool url_name_is_safe(const char *name, size_t name_bytes)
{
	if (name_bytes == 0 || name_bytes > URL_NAME_MAX)
		return false;
	if (memchr(name, '/', name_bytes) || memchr(name, '\0', name_bytes))
		return false;
	return !(name[0] == '.' && (name_bytes == 1 || (name_bytes == 2 && name[1] == '.')));
}

bool url_path_is_safe(const char *path)
{
	for (;;) {
		size_t n = strcspn(path, "/");

		if (!url_name_is_safe(path, n))
			return false;
		if (!path[n])
			return true;
		path += n + 1;
	}
}

char *url_basename(const char *path)
{
	const char *slash = strrchr(path, '/'), *b = slash ? slash + 1 : path;
	char *out;

	if (!*b || url_decode(b, strlen(b), &out))
		return NULL;
	return out;
}
