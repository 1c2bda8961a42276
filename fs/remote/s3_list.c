/* ListObjectsV2 and Error document parsing with expat (see s3_list.h): remote_s3.c hands a
 * reply body here and gets entries or an error class back. Anything implausible is refused. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>

#include "fs/remote/s3_list.h"

enum field {
	F_NONE,
	/* children of ListBucketResult */
	F_IS_TRUNCATED,
	F_NEXT_TOKEN,
	F_KEY_COUNT,
	F_ENCODING_TYPE,
	/* children of Contents */
	F_KEY,
	F_SIZE,
	F_LAST_MODIFIED,
	F_ETAG,
	/* child of CommonPrefixes */
	F_PREFIX,
	/* children of Error */
	F_CODE,
	F_MESSAGE,
	F_REGION,
};

enum container { C_NONE, C_CONTENTS, C_PREFIXES };

/* The parser's state: one per parse, single-threaded. text holds the current field's
 * characters (at most S3_LIST_MAX_TEXT_BYTES). */
struct parse {
	XML_Parser xp;
	bool is_error_doc;
	int depth;
	enum container in;
	enum field field;
	char text[S3_LIST_MAX_TEXT_BYTES + 1];
	size_t text_len;
	char err[200]; /* first problem found; "" while fine */
	bool url_encoded;
	/* the Contents being read */
	struct s3_list_object cur;
	bool cur_has_size;
	struct s3_list_page *page;
	size_t cap_objects, cap_prefixes;
	struct s3_error_doc *doc;
	bool has_truncated_field;
};

/* Makes server text safe to quote in a one-line message: a CR, LF or escape sequence in a key
 * or an Error's Message would split the line or forge another (found by fuzz_s3_list). */
static void make_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

static void fail(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;

	if (p->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	make_printable(p->err);
	XML_StopParser(p->xp, XML_FALSE);
}

static enum field field_of(const struct parse *p, const char *name)
{
	static const struct {
		const char *name;
		enum field f;
	} top[] = { { "IsTruncated", F_IS_TRUNCATED }, { "NextContinuationToken", F_NEXT_TOKEN },
		{ "KeyCount", F_KEY_COUNT }, { "EncodingType", F_ENCODING_TYPE } },
	  contents[] = { { "Key", F_KEY }, { "Size", F_SIZE }, { "LastModified", F_LAST_MODIFIED },
		  { "ETag", F_ETAG } },
	  error[] = { { "Code", F_CODE }, { "Message", F_MESSAGE }, { "Region", F_REGION } };

	if (p->is_error_doc) {
		if (p->depth != 2)
			return F_NONE;
		for (size_t i = 0; i < sizeof(error) / sizeof(error[0]); i++)
			if (!strcmp(name, error[i].name))
				return error[i].f;
		return F_NONE;
	}
	if (p->depth == 2) {
		for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++)
			if (!strcmp(name, top[i].name))
				return top[i].f;
	} else if (p->depth == 3 && p->in == C_CONTENTS) {
		for (size_t i = 0; i < sizeof(contents) / sizeof(contents[0]); i++)
			if (!strcmp(name, contents[i].name))
				return contents[i].f;
	} else if (p->depth == 3 && p->in == C_PREFIXES && !strcmp(name, "Prefix")) {
		return F_PREFIX;
	}
	return F_NONE;
}

static void XMLCALL on_start(void *arg, const XML_Char *name, const XML_Char **attrs)
{
	struct parse *p = arg;

	p->depth++;
	if (p->depth > S3_LIST_MAX_DEPTH) {
		fail(p, "XML nested deeper than %d elements", S3_LIST_MAX_DEPTH);
		return;
	}
	if (p->depth == 1) {
		if (!strcmp(name, "Error") && p->doc)
			p->is_error_doc = true;
		else if (strcmp(name, "ListBucketResult") || !p->page)
			fail(p, "unexpected XML document <%.40s>", name);
		return;
	}
	if (p->field != F_NONE) {
		fail(p, "unexpected element <%.40s> inside a text field", name);
		return;
	}
	if (p->depth == 2 && !p->is_error_doc) {
		if (!strcmp(name, "Contents")) {
			p->in = C_CONTENTS;
			memset(&p->cur, 0, sizeof(p->cur));
			p->cur_has_size = false;
			return;
		}
		if (!strcmp(name, "CommonPrefixes")) {
			p->in = C_PREFIXES;
			return;
		}
	}
	p->field = field_of(p, name);
	p->text_len = 0;
	p->text[0] = '\0'; /* an element without text (<Key/>) is "" */
}

static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

/* "2009-10-12T17:50:30.000Z"; false for anything else. */
static bool parse_time(const char *s, struct timespec *out)
{
	struct tm tm = { 0 };
	int n = 0;
	long ms = 0;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
		return false;
	s += n;
	if (*s == '.') {
		int digits = 0;
		for (s++; *s >= '0' && *s <= '9'; s++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*s - '0');
		while (digits++ < 3)
			ms *= 10;
	}
	if (strcmp(s, "Z") || tm.tm_year < 1970 || tm.tm_year > 9999 || tm.tm_mon < 1 ||
		tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
		tm.tm_min > 59 || tm.tm_sec > 60)
		return false;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	out->tv_sec = timegm(&tm);
	out->tv_nsec = ms * 1000000;
	return out->tv_sec != (time_t)-1;
}

static char *dup_text(struct parse *p)
{
	char *s = malloc(p->text_len + 1);

	if (!s) {
		fail(p, "out of memory");
		return NULL;
	}
	memcpy(s, p->text, p->text_len + 1);
	return s;
}

static bool entries_full(struct parse *p)
{
	if (p->page->nr_objects + p->page->nr_prefixes >= S3_LIST_MAX_ENTRIES) {
		fail(p, "more than %d entries in one listing page", S3_LIST_MAX_ENTRIES);
		return true;
	}
	return false;
}

static void end_contents(struct parse *p)
{
	struct s3_list_page *pg = p->page;

	if (!p->cur.key) {
		fail(p, "a listing entry without a Key");
		goto drop;
	}
	if (!p->cur_has_size) {
		fail(p, "listing entry '%.100s' without a valid Size", p->cur.key);
		goto drop;
	}
	if (entries_full(p))
		goto drop;
	if (pg->nr_objects == p->cap_objects) {
		size_t cap = p->cap_objects ? 2 * p->cap_objects : 64;
		void *o = realloc(pg->objects, cap * sizeof(*pg->objects));
		if (!o) {
			fail(p, "out of memory");
			goto drop;
		}
		pg->objects = o;
		p->cap_objects = cap;
	}
	p->cur.key_bytes = strlen(p->cur.key);
	pg->objects[pg->nr_objects++] = p->cur;
	memset(&p->cur, 0, sizeof(p->cur));
	return;
drop:
	free(p->cur.key);
	free(p->cur.etag);
	memset(&p->cur, 0, sizeof(p->cur));
}

static void add_prefix(struct parse *p)
{
	struct s3_list_page *pg = p->page;

	if (entries_full(p))
		return;
	if (pg->nr_prefixes == p->cap_prefixes) {
		size_t cap = p->cap_prefixes ? 2 * p->cap_prefixes : 16;
		void *o = realloc(pg->prefixes, cap * sizeof(*pg->prefixes));
		if (!o) {
			fail(p, "out of memory");
			return;
		}
		pg->prefixes = o;
		p->cap_prefixes = cap;
	}
	char *s = dup_text(p);
	if (!s)
		return;
	pg->prefixes[pg->nr_prefixes].prefix = s;
	pg->prefixes[pg->nr_prefixes++].prefix_bytes = p->text_len;
}

static void set_field(struct parse *p, char **dst)
{
	if (*dst) {
		fail(p, "a field given twice in one entry");
		return;
	}
	*dst = dup_text(p);
}

/* Error texts are for messages only: truncated to fit, control bytes made '?'. */
static void copy_trunc(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
	make_printable(dst);
}

static void end_field(struct parse *p)
{
	uint64_t v = 0;

	switch (p->field) {
	case F_IS_TRUNCATED:
		p->has_truncated_field = true;
		if (!strcmp(p->text, "true"))
			p->page->is_truncated = true;
		else if (strcmp(p->text, "false"))
			fail(p, "IsTruncated is neither true nor false");
		break;
	case F_NEXT_TOKEN:
		set_field(p, &p->page->next_token);
		break;
	case F_KEY_COUNT:
		if (!parse_u64(p->text, &v) || v > S3_LIST_MAX_ENTRIES)
			fail(p, "implausible KeyCount '%.40s'", p->text);
		else
			p->page->key_count = (long)v;
		break;
	case F_ENCODING_TYPE:
		p->url_encoded = !strcmp(p->text, "url");
		break;
	case F_KEY:
		set_field(p, &p->cur.key);
		break;
	case F_SIZE:
		/* S3 objects are at most 5 TiB; anything near 2^63 would overflow offsets. */
		if (!parse_u64(p->text, &v) || v > (UINT64_C(1) << 50))
			fail(p, "implausible Size '%.40s'", p->text);
		p->cur.size = v;
		p->cur_has_size = true;
		break;
	case F_LAST_MODIFIED:
		if (!parse_time(p->text, &p->cur.mtime))
			memset(&p->cur.mtime, 0, sizeof(p->cur.mtime));
		break;
	case F_ETAG:
		set_field(p, &p->cur.etag);
		break;
	case F_PREFIX:
		add_prefix(p);
		break;
	case F_CODE:
		copy_trunc(p->doc->code, sizeof(p->doc->code), p->text);
		break;
	case F_MESSAGE:
		copy_trunc(p->doc->message, sizeof(p->doc->message), p->text);
		break;
	case F_REGION:
		copy_trunc(p->doc->region, sizeof(p->doc->region), p->text);
		break;
	case F_NONE:
		break;
	}
}

static void XMLCALL on_end(void *arg, const XML_Char *name)
{
	struct parse *p = arg;

	if (p->field != F_NONE) {
		end_field(p);
		p->field = F_NONE;
	} else if (p->depth == 2 && p->in == C_CONTENTS) {
		end_contents(p);
		p->in = C_NONE;
	} else if (p->depth == 2) {
		p->in = C_NONE;
	}
	p->depth--;
}

static void XMLCALL on_text(void *arg, const XML_Char *s, int len)
{
	struct parse *p = arg;

	if (p->field == F_NONE)
		return;
	if ((size_t)len > S3_LIST_MAX_TEXT_BYTES - p->text_len) {
		fail(p, "a text field over %d bytes", S3_LIST_MAX_TEXT_BYTES);
		return;
	}
	memcpy(p->text + p->text_len, s, (size_t)len);
	p->text_len += (size_t)len;
	p->text[p->text_len] = '\0';
}

/* S3 never sends a DTD; refusing one closes the door on entity expansion attacks. */
static void XMLCALL on_doctype(void *arg, const XML_Char *name, const XML_Char *sysid,
	const XML_Char *pubid, int has_internal_subset)
{
	fail(arg, "a DOCTYPE declaration");
}

static void XMLCALL on_entity_decl(void *arg, const XML_Char *name, int is_pe,
	const XML_Char *value, int value_len, const XML_Char *base, const XML_Char *sysid,
	const XML_Char *pubid, const XML_Char *notation)
{
	fail(arg, "an entity declaration");
}

static int run_parser(struct parse *p, const char *xml, size_t len)
{
	int err = 0;

	p->xp = XML_ParserCreate("UTF-8");
	if (!p->xp) {
		snprintf(p->err, sizeof(p->err), "out of memory");
		return -ENOMEM;
	}
	XML_SetUserData(p->xp, p);
	XML_SetElementHandler(p->xp, on_start, on_end);
	XML_SetCharacterDataHandler(p->xp, on_text);
	XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
	XML_SetEntityDeclHandler(p->xp, on_entity_decl);
	if (len > INT32_MAX) {
		snprintf(p->err, sizeof(p->err), "a reply of %zu bytes", len);
		err = -EBADMSG;
	} else if (XML_Parse(p->xp, xml, (int)len, XML_TRUE) != XML_STATUS_OK && !p->err[0]) {
		snprintf(p->err, sizeof(p->err), "malformed XML at line %lu: %s",
			(unsigned long)XML_GetCurrentLineNumber(p->xp),
			XML_ErrorString(XML_GetErrorCode(p->xp)));
	}
	if (p->err[0] && !err)
		err = -EBADMSG;
	XML_ParserFree(p->xp);
	return err;
}

/* Undoes EncodingType=url (as botocore's unquote_plus: '+' is a space, %XX a byte). */
static int url_decode(char *s, size_t *len)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r == '+') {
			*w++ = ' ';
		} else if (*r == '%') {
			int hi, lo;
			if (sscanf(r + 1, "%1x%1x", (unsigned *)&hi, (unsigned *)&lo) != 2)
				return -EBADMSG;
			*w++ = (char)(hi * 16 + lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	*len = (size_t)(w - s);
	return 0;
}

void s3_list_page_done(struct s3_list_page *page)
{
	if (!page)
		return;
	for (size_t i = 0; i < page->nr_objects; i++) {
		free(page->objects[i].key);
		free(page->objects[i].etag);
	}
	free(page->objects);
	for (size_t i = 0; i < page->nr_prefixes; i++)
		free(page->prefixes[i].prefix);
	free(page->prefixes);
	free(page->next_token);
	memset(page, 0, sizeof(*page));
	page->key_count = -1;
}

int s3_list_parse(const char *xml, size_t len, struct s3_list_page *page, char *errbuf,
	size_t errlen)
{
	struct parse *p = calloc(1, sizeof(*p));
	struct s3_error_doc doc = { 0 };
	int err;

	memset(page, 0, sizeof(*page));
	page->key_count = -1;
	if (!p) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	p->page = page;
	p->doc = &doc;
	err = run_parser(p, xml, len);
	free(p->cur.key);
	free(p->cur.etag);
	if (!err && p->is_error_doc) {
		snprintf(errbuf, errlen, "S3 error %s: %s", doc.code[0] ? doc.code : "(no code)",
			doc.message);
		err = -EREMOTEIO;
		goto out;
	}
	if (!err && !p->has_truncated_field)
		snprintf(p->err, sizeof(p->err), "a listing without IsTruncated");
	else if (!err && page->is_truncated && (!page->next_token || !page->next_token[0]))
		snprintf(p->err, sizeof(p->err),
			"a truncated listing without a continuation token");
	if (!err && p->err[0])
		err = -EBADMSG;
	for (size_t i = 0; !err && p->url_encoded && i < page->nr_objects; i++)
		err = url_decode(page->objects[i].key, &page->objects[i].key_bytes);
	for (size_t i = 0; !err && p->url_encoded && i < page->nr_prefixes; i++)
		err = url_decode(page->prefixes[i].prefix, &page->prefixes[i].prefix_bytes);
	if (err == -EBADMSG && !p->err[0])
		snprintf(p->err, sizeof(p->err), "a bad %%-escape in a url-encoded key");
	if (err)
		snprintf(errbuf, errlen, "bad ListObjectsV2 reply: %s", p->err);
out:
	if (err)
		s3_list_page_done(page);
	free(p);
	return err;
}

int s3_error_parse(const char *xml, size_t len, struct s3_error_doc *out)
{
	struct parse *p = calloc(1, sizeof(*p));
	int err;

	memset(out, 0, sizeof(*out));
	if (!p)
		return -ENOMEM;
	p->doc = out;
	err = run_parser(p, xml, len);
	if (!err && !p->is_error_doc)
		err = -EBADMSG;
	free(p);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}

enum s3_error s3_error_classify(const char *code, long http_status)
{
	static const struct {
		const char *code;
		enum s3_error e;
	} codes[] = {
		{ "SignatureDoesNotMatch", S3_ERR_BAD_SIGNATURE },
		{ "InvalidAccessKeyId", S3_ERR_BAD_KEY_ID },
		{ "AccessDenied", S3_ERR_ACCESS_DENIED },
		{ "ExpiredToken", S3_ERR_EXPIRED },
		{ "TokenRefreshRequired", S3_ERR_EXPIRED },
		{ "RequestTimeTooSkewed", S3_ERR_EXPIRED },
		{ "NoSuchBucket", S3_ERR_NO_SUCH_BUCKET },
		{ "NoSuchKey", S3_ERR_NO_SUCH_KEY },
		{ "PermanentRedirect", S3_ERR_WRONG_REGION },
		{ "AuthorizationHeaderMalformed", S3_ERR_WRONG_REGION },
		{ "PreconditionFailed", S3_ERR_PRECONDITION },
		{ "InvalidRange", S3_ERR_RANGE },
		{ "SlowDown", S3_ERR_SLOW_DOWN },
		{ "InternalError", S3_ERR_SLOW_DOWN },
		{ "ServiceUnavailable", S3_ERR_SLOW_DOWN },
		{ "RequestTimeout", S3_ERR_SLOW_DOWN },
	};

	if (http_status >= 200 && http_status < 300)
		return S3_ERR_NONE;
	for (size_t i = 0; code && i < sizeof(codes) / sizeof(codes[0]); i++)
		if (!strcmp(code, codes[i].code))
			return codes[i].e;
	switch (http_status) {
	case 301:
	case 307:
		return S3_ERR_WRONG_REGION;
	case 403:
		return S3_ERR_ACCESS_DENIED;
	case 404:
		return S3_ERR_NO_SUCH_KEY;
	case 412:
		return S3_ERR_PRECONDITION;
	case 416:
		return S3_ERR_RANGE;
	}
	if (http_status >= 500 || http_status == 0)
		return S3_ERR_SLOW_DOWN;
	return S3_ERR_OTHER;
}

enum net_error s3_error_to_net(enum s3_error e, long http_status)
{
	switch (e) {
	case S3_ERR_NONE:
		return NET_OK;
	case S3_ERR_ACCESS_DENIED:
	case S3_ERR_BAD_SIGNATURE:
	case S3_ERR_BAD_KEY_ID:
	case S3_ERR_EXPIRED:
		return NET_HTTP_403;
	case S3_ERR_NO_SUCH_BUCKET:
	case S3_ERR_NO_SUCH_KEY:
		return NET_HTTP_404;
	case S3_ERR_WRONG_REGION:
		return NET_HTTP_4XX; /* a redirect is not followed: retrying cannot help */
	case S3_ERR_PRECONDITION:
		return NET_HTTP_412;
	case S3_ERR_RANGE:
		return NET_HTTP_416;
	case S3_ERR_SLOW_DOWN:
		/* RequestTimeout comes as a 400, but S3 asks for a retry as for a 5xx. */
		return NET_HTTP_5XX;
	case S3_ERR_OTHER:
		break;
	}
	return net_error_from_status(http_status);
}
