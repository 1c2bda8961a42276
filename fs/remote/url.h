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
/* Percent-encodes s into o (room for 3 * strlen(s) bytes), '/' kept when keep_slash; returns
 * the bytes written, without a NUL. The allocation-free form, for writing listings. */
size_t url_encode_to(char *o, const char *s, bool keep_slash);

/* base is a directory URL ending in '/'; rel a relative path, NOT encoded. Returns
 * base + encoded(rel) (+ "/" when dir_slash), or NULL (ENOMEM). */
char *url_join(const char *base, const char *rel, bool dir_slash);

/* What a URL's query string holds may be a secret (a token, a signature), and what is shown
 * of a source ends up in world-readable places (/proc/mounts, logs): the display form of an
 * http(s) URL has its query replaced by URL_REDACTED ("http://h/f?REDACTED"; a fragment
 * after the query goes with it) and a user:password@ by "REDACTED@". Other strings (s3://,
 * local paths, where '?' is an ordinary character) come back unchanged. A new string, or NULL
 * (ENOMEM). */
#define URL_REDACTED "REDACTED"
char *url_redact(const char *s);
/* The same in place, for strings whose storage cannot move (the process's argv): the query's
 * bytes are overwritten with URL_REDACTED, cut to the query's length, and NULs after it.
 * Returns whether anything was redacted. */
bool url_redact_in_place(char *s);

/* The one rule for a name a server hands us (a listing, a manifest, an S3 key, a URL's last
 * component) before it becomes a path component under the mount: name_bytes in 1..255 (the
 * kernel's NAME_MAX), no '/' and no NUL (either would make it two names, or a shorter one),
 * and not "." or ".." (which would step out of its directory). Every other byte is the
 * source's own: spaces, control characters such as a tab, invalid UTF-8 are listed as they
 * are, as a local file system would. */
#define URL_NAME_MAX 255
bool url_name_is_safe(const char *name, size_t name_bytes);
/* A relative path made only of such names joined by single '/': not empty, no leading,
 * trailing or doubled '/'. */
bool url_path_is_safe(const char *path);

/* The last path component of a URL path, decoded; NULL for a path ending in '/' or an
 * undecodable one. */
char *url_basename(const char *path);

#endif
