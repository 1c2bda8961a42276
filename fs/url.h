/* http(s) URLs as the HTTP backend needs them: split into parts, percent-decode names from
 * listings, percent-encode relative paths, and join a directory URL with a relative path. */
#ifndef FERRY_URL_H
#define FERRY_URL_H

#include <stdbool.h>
#include <stddef.h>

/* A parsed http(s) URL. All strings are owned (url_done frees them). */
struct url {
	char *scheme;  /* "http" or "https", lower case */
	char *host;    /* as written; IPv6 literals keep their brackets */
	unsigned port; /* explicit or the scheme's default */
	char *path;    /* still percent-encoded; always starts with '/' */
	char *query;   /* after '?', without it; NULL when absent */
};

/* Parses an absolute http:// or https:// URL (no user-info, no fragment kept).
 * -EINVAL with a one-line reason in errbuf. */
int url_parse(struct url *u, const char *s, char *errbuf, size_t errlen);
void url_done(struct url *u);

/* Decodes %XX escapes of in[0..len) into a new NUL-terminated string. A '%' not followed by two
 * hex digits, or an escape that decodes to NUL, is -EINVAL. '+' stays '+'. */
int url_decode(const char *in, size_t len, char **out);

/* Encodes a relative path for use in a URL: every byte except RFC 3986 unreserved characters
 * and '/' becomes %XX. Returns a new string or NULL (ENOMEM). */
char *url_encode_path(const char *path);
/* Same, but '/' is encoded too (one path component). */
char *url_encode_component(const char *name);

/* base is a directory URL ending in '/'; rel a relative path, NOT encoded. Returns
 * base + encoded(rel) (+ "/" when dir_slash), or NULL (ENOMEM). */
char *url_join(const char *base, const char *rel, bool dir_slash);

/* The last path component of a URL path, decoded; NULL for a path ending in '/' or an
 * undecodable one. */
char *url_basename(const char *path);

#endif
