/* AWS Signature Version 4 for S3 (see s3_sign.h): canonical request, string to sign, signing
 * key and Authorization header, with OpenSSL's HMAC-SHA256 and SHA-256. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "fs/remote/aws_config.h"
#include "fs/remote/s3_sign.h"

/* A growing string; on allocation failure it remembers it and keeps failing. */
struct sbuf {
	char *s;
	size_t len, cap;
	bool failed;
};

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->s, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
	sb_putn(b, &c, 1);
}

/* Returns the string (owned by the caller) or NULL when an allocation failed. */
static char *sb_finish(struct sbuf *b)
{
	if (b->failed || !b->s) {
		free(b->s);
		return b->failed ? NULL : strdup("");
	}
	return b->s;
}

static bool is_unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static void sb_put_encoded(struct sbuf *b, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		/* isalnum() is locale-dependent; only ASCII letters and digits are unreserved. */
		if ((*p < 0x80 && is_unreserved(*p)) || (keep_slash && *p == '/')) {
			sb_putc(b, (char)*p);
		} else {
			char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
			sb_putn(b, e, 3);
		}
	}
}

char *s3_uri_encode(const char *s, bool keep_slash)
{
	struct sbuf b = { 0 };

	sb_put_encoded(&b, s, keep_slash);
	return sb_finish(&b);
}

static void to_hex(const unsigned char *d, size_t n, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * n] = '\0';
}

void s3_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char d[SHA256_DIGEST_LENGTH];

	SHA256(data, len, d);
	to_hex(d, sizeof(d), hex);
}

static int hmac(const void *key, size_t key_len, const char *msg, unsigned char out[32])
{
	unsigned int out_len = 32;

	if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out,
		    &out_len))
		return -ENOMEM;
	return 0;
}

struct enc_pair {
	char *name, *value;
};

static int cmp_pair(const void *a, const void *b)
{
	const struct enc_pair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

/* A header for the canonical form: lower-case name, value trimmed with inner runs of
 * whitespace folded to one space (as SigV4's Trimall). */
struct canon_header {
	char *name, *value;
};

static int cmp_header(const void *a, const void *b)
{
	return strcmp(((const struct canon_header *)a)->name,
		((const struct canon_header *)b)->name);
}

static char *lower_dup(const char *s)
{
	char *d = strdup(s);

	for (char *p = d; p && *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

static char *trimall_dup(const char *s)
{
	struct sbuf b = { 0 };
	bool space = false;

	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s; s++) {
		if (*s == ' ' || *s == '\t') {
			space = true;
			continue;
		}
		if (space)
			sb_putc(&b, ' ');
		space = false;
		sb_putc(&b, *s);
	}
	return sb_finish(&b);
}

static bool has_newline(const char *s)
{
	return strchr(s, '\n') || strchr(s, '\r');
}

void s3_signed_done(struct s3_signed *s)
{
	if (!s)
		return;
	free(s->encoded_path);
	free(s->encoded_query);
	free(s->canonical_request);
	free(s->string_to_sign);
	free(s->authorization);
	for (size_t i = 0; i < s->nr_header_lines; i++)
		free(s->header_lines[i]);
	free(s->header_lines);
	memset(s, 0, sizeof(*s));
}

static int add_line(struct s3_signed *out, const char *name, const char *value)
{
	char *line;

	if (asprintf(&line, "%s: %s", name, value) < 0)
		return -ENOMEM;
	out->header_lines[out->nr_header_lines++] = line;
	return 0;
}

int s3_sign_request(const struct s3_sign_input *in, struct s3_signed *out)
{
	const char *service = in->service ? in->service : "s3";
	const char *payload = in->payload_hash ? in->payload_hash : S3_EMPTY_SHA256;
	struct enc_pair *q = NULL;
	struct canon_header *h = NULL;
	size_t nr_h = 0;
	struct sbuf b = { 0 };
	char date[9], hash[65];
	struct tm tm;
	int err = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!in->method || !in->host || !in->path || in->path[0] != '/' || !in->region ||
		!in->region[0] || has_newline(in->host))
		return -EINVAL;
	if (!gmtime_r(&in->when, &tm))
		return -EINVAL;
	strftime(out->amz_date, sizeof(out->amz_date), "%Y%m%dT%H%M%SZ", &tm);
	strftime(date, sizeof(date), "%Y%m%d", &tm);

	out->encoded_path = s3_uri_encode(in->path, true);
	if (!out->encoded_path)
		goto err;

	/* Canonical query: each name and value encoded, then sorted by name, then value. */
	q = calloc(in->nr_query + 1, sizeof(*q));
	if (!q)
		goto err;
	for (size_t i = 0; i < in->nr_query; i++) {
		q[i].name = s3_uri_encode(in->query[i].name, false);
		q[i].value = s3_uri_encode(in->query[i].value ? in->query[i].value : "", false);
		if (!q[i].name || !q[i].value)
			goto err;
	}
	qsort(q, in->nr_query, sizeof(*q), cmp_pair);
	for (size_t i = 0; i < in->nr_query; i++) {
		if (i)
			sb_putc(&b, '&');
		sb_puts(&b, q[i].name);
		sb_putc(&b, '=');
		sb_puts(&b, q[i].value);
	}
	out->encoded_query = sb_finish(&b);
	memset(&b, 0, sizeof(b));
	if (!out->encoded_query)
		goto err;

	/* Headers: host, the caller's, and the x-amz-* ones the signature itself needs. */
	h = calloc(in->nr_headers + 4, sizeof(*h));
	out->header_lines = calloc(in->nr_headers + 4, sizeof(char *));
	if (!h || !out->header_lines)
		goto err;
	err = -EINVAL;
	for (size_t i = 0; i < in->nr_headers; i++) {
		const char *n = in->headers[i].name, *v = in->headers[i].value;
		if (!n || !v || !n[0] || has_newline(n) || has_newline(v) || strchr(n, ':') ||
			!strcasecmp(n, "host") || !strcasecmp(n, "authorization"))
			goto err;
	}
	err = -ENOMEM;
	h[nr_h].name = strdup("host");
	h[nr_h++].value = trimall_dup(in->host);
	if (in->cred) {
		h[nr_h].name = strdup("x-amz-date");
		h[nr_h++].value = strdup(out->amz_date);
		h[nr_h].name = strdup("x-amz-content-sha256");
		h[nr_h++].value = strdup(payload);
		if (in->cred->session_token) {
			h[nr_h].name = strdup("x-amz-security-token");
			h[nr_h++].value = trimall_dup(in->cred->session_token);
		}
	}
	for (size_t i = 0; i < in->nr_headers; i++) {
		h[nr_h].name = lower_dup(in->headers[i].name);
		h[nr_h++].value = trimall_dup(in->headers[i].value);
	}
	for (size_t i = 0; i < nr_h; i++)
		if (!h[i].name || !h[i].value)
			goto err;
	qsort(h, nr_h, sizeof(*h), cmp_header);
	err = -EINVAL;
	for (size_t i = 1; i < nr_h; i++)
		if (!strcmp(h[i].name, h[i - 1].name))
			goto err; /* a header twice: the caller's mistake, not ours to merge */
	err = -ENOMEM;

	for (size_t i = 0; i < nr_h; i++)
		if (strcmp(h[i].name, "host") && add_line(out, h[i].name, h[i].value))
			goto err;

	if (!in->cred) {
		err = 0;
		goto out;
	}

	/* The canonical request. */
	sb_puts(&b, in->method);
	sb_putc(&b, '\n');
	sb_puts(&b, out->encoded_path);
	sb_putc(&b, '\n');
	sb_puts(&b, out->encoded_query);
	sb_putc(&b, '\n');
	for (size_t i = 0; i < nr_h; i++) {
		sb_puts(&b, h[i].name);
		sb_putc(&b, ':');
		sb_puts(&b, h[i].value);
		sb_putc(&b, '\n');
	}
	sb_putc(&b, '\n');
	struct sbuf signed_headers = { 0 };
	for (size_t i = 0; i < nr_h; i++) {
		if (i)
			sb_putc(&signed_headers, ';');
		sb_puts(&signed_headers, h[i].name);
	}
	char *sh = sb_finish(&signed_headers);
	if (!sh)
		goto err;
	sb_puts(&b, sh);
	sb_putc(&b, '\n');
	sb_puts(&b, payload);
	out->canonical_request = sb_finish(&b);
	memset(&b, 0, sizeof(b));
	if (!out->canonical_request) {
		free(sh);
		goto err;
	}

	/* The string to sign. */
	s3_sha256_hex(out->canonical_request, strlen(out->canonical_request), hash);
	if (asprintf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
		    out->amz_date, date, in->region, service, hash) < 0) {
		out->string_to_sign = NULL;
		free(sh);
		goto err;
	}

	/* The signing key: HMAC chain over date, region, service, "aws4_request". */
	unsigned char k[32], sig[32];
	char *secret;
	char sig_hex[65];
	if (asprintf(&secret, "AWS4%s", in->cred->secret_access_key) < 0) {
		free(sh);
		goto err;
	}
	err = hmac(secret, strlen(secret), date, k);
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);
	if (!err)
		err = hmac(k, 32, in->region, k);
	if (!err)
		err = hmac(k, 32, service, k);
	if (!err)
		err = hmac(k, 32, "aws4_request", k);
	if (!err)
		err = hmac(k, 32, out->string_to_sign, sig);
	OPENSSL_cleanse(k, sizeof(k));
	if (err) {
		free(sh);
		goto err;
	}
	to_hex(sig, 32, sig_hex);
	if (asprintf(&out->authorization,
		    "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
		    "Signature=%s",
		    in->cred->access_key_id, date, in->region, service, sh, sig_hex) < 0) {
		out->authorization = NULL;
		free(sh);
		err = -ENOMEM;
		goto err;
	}
	free(sh);
	err = add_line(out, "Authorization", out->authorization);
	if (err)
		goto err;
	goto out;
err:
	free(b.s);
	s3_signed_done(out);
out:
	for (size_t i = 0; q && i < in->nr_query; i++) {
		free(q[i].name);
		free(q[i].value);
	}
	free(q);
	for (size_t i = 0; h && i < nr_h; i++) {
		free(h[i].name);
		free(h[i].value);
	}
	free(h);
	return err;
}
