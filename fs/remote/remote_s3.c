/* The S3 backend (remote_s3_ops): s3://bucket[/prefix] listed with ListObjectsV2 one directory
 * at a time, stat by listing or HEAD, and signed ranged GETs prepared for the fetch engine. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "fs/log.h"
#include "fs/remote/aws_config.h"
#include "fs/remote/net.h"
#include "fs/remote/net_client.h"
#include "fs/remote/remote.h"
#include "fs/remote/remote_i.h"
#include "fs/remote/s3_address.h"
#include "fs/remote/s3_list.h"
#include "fs/remote/s3_sign.h"
#include "fs/remote/url.h"

#define S3_MAX_REPLY_BYTES (64u << 20) /* a listing page of 1,000 keys is well under 1 MiB */
#define S3_SYNC_RETRIES    4    /* listings and HEADs; the fetch engine retries GETs itself */
#define S3_BACKOFF_MS      100  /* first retry, doubled each time (net_backoff_ms) */
#define S3_BACKOFF_MAX_MS  2000 /* also caps a Retry-After: a listing has a reader waiting */
#define S3_TIMEOUT_S       300  /* a listing page is small: unlike a chunk, no excuse for more */
#define S3_MAX_DIR_ENTRIES 10000000 /* one directory; beyond this the listing is refused */

/* One mounted source. Everything but the counters (and the client's own locks) is set by open
 * and read-only afterwards, so list/stat/prepare_get run from many threads without a lock. */
struct remote_s3 {
	struct remote base;
	struct aws_config cfg;
	char *bucket;
	char *prefix; /* "" or "a/b/" for a directory; the key for a single file */
	bool single_file;
	struct s3_address addr; /* endpoint, Host header, addressing style */
	/* TLS and timeouts from the options; never a libcurl trace, which would print the
	 * session token. */
	struct net_client *client;
	atomic_bool warned_unsafe, warned_collision;
	atomic_ulong nr_unsafe, nr_collisions;
};

/* ---- addressing ---- */

/* The key of path (relative to the source root) in the bucket; malloc'd. */
static char *key_of(const struct remote_s3 *s, const char *path)
{
	char *k;

	if (s->single_file)
		return strdup(s->prefix);
	if (asprintf(&k, "%s%s", s->prefix, path) < 0)
		return NULL;
	return k;
}

/* ---- messages ---- */

/* What a reply means for the retry policy and the -errno: its HTTP status refined by S3's Error
 * code (a 400 RequestTimeout is retried, a 403 or NoSuchBucket is final). */
static enum net_error s3_reply_error(const struct net_reply *rep, struct s3_error_doc *doc)
{
	memset(doc, 0, sizeof(*doc));
	if (rep->status >= 200 && rep->status < 300)
		return NET_OK;
	if (rep->body_bytes)
		s3_error_parse(rep->body, rep->body_bytes, doc);
	return s3_error_to_net(s3_error_classify(doc->code, rep->status), rep->status);
}

/* A one-line reason for a failed reply, never holding a secret. Returns the -errno. */
static int s3_describe(struct remote_s3 *s, const char *what, const struct net_reply *rep,
	char *errbuf, size_t errlen)
{
	struct s3_error_doc doc;
	enum net_error ne = s3_reply_error(rep, &doc);
	enum s3_error e = s3_error_classify(doc.code, rep->status);

	if (!strcmp(doc.message, doc.code))
		doc.message[0] = '\0'; /* radosgw's Message repeats the Code */

	const char *src = s->cfg.cred_source ? s->cfg.cred_source : "no credentials";
	switch (e) {
	case S3_ERR_BAD_SIGNATURE:
		snprintf(errbuf, errlen,
			"access denied to s3://%s: SignatureDoesNotMatch: the secret access key "
			"(from %s) is wrong for this access key id",
			s->bucket, src);
		break;
	case S3_ERR_BAD_KEY_ID:
		snprintf(errbuf, errlen,
			"access denied to s3://%s: InvalidAccessKeyId: the server does not know "
			"the access key id (from %s)",
			s->bucket, src);
		break;
	case S3_ERR_ACCESS_DENIED:
		snprintf(errbuf, errlen, "access denied to s3://%s/%s (%s%s%s, credentials: %s)",
			s->bucket, what, doc.code[0] ? doc.code : "HTTP 403",
			doc.message[0] ? ": " : "", doc.message,
			s->cfg.anonymous ? "anonymous" : src);
		break;
	case S3_ERR_EXPIRED:
		snprintf(errbuf, errlen, "access denied to s3://%s: %s: %s", s->bucket, doc.code,
			doc.message);
		break;
	case S3_ERR_NO_SUCH_BUCKET:
		snprintf(errbuf, errlen, "no such bucket '%s' at %s", s->bucket,
			s->addr.scheme_host);
		break;
	case S3_ERR_WRONG_REGION:
		snprintf(errbuf, errlen,
			"s3://%s is not in region %s%s%s (%s); pass --region or set AWS_REGION",
			s->bucket, s->cfg.region, doc.region[0] ? ", it is in " : "", doc.region,
			doc.code[0] ? doc.code : "redirect");
		break;
	default:
		snprintf(errbuf, errlen, "s3://%s/%s: HTTP %ld%s%s%s%s", s->bucket, what,
			rep->status, doc.code[0] ? " " : "", doc.code, doc.message[0] ? ": " : "",
			doc.message);
		break;
	}
	return net_error_to_errno(ne);
}

/* ---- synchronous requests ---- */

/* One request; what net_error_is_retryable calls transient (resets, timeouts, 5xx, SlowDown,
 * RequestTimeout) is retried with jittered exponential backoff, each attempt signed afresh.
 * 0 with rep filled (any HTTP status; the caller describes a failure), or -errno with a reason
 * in errbuf when no reply came. */
static int s3_request(struct remote_s3 *s, const char *method, const char *key,
	const struct s3_kv *query, size_t nr_query, struct net_reply *rep, char *errbuf,
	size_t errlen)
{
	struct net_request req = {
		.head = !strcmp(method, "HEAD"),
		.max_body_bytes = S3_MAX_REPLY_BYTES,
		.timeout_s = S3_TIMEOUT_S,
	};

	for (unsigned retry = 0;; retry++) {
		struct s3_error_doc doc = { 0 };
		struct curl_slist *hdrs = NULL;
		enum net_error ne;
		char *url = NULL;
		uint64_t ms;
		int err;

		err = s3_address_request(&s->addr, &s->cfg, method, key, query, nr_query, NULL, 0,
			NULL, &url, &hdrs);
		if (err) {
			memset(rep, 0, sizeof(*rep));
			snprintf(errbuf, errlen, "cannot sign the request: %s", strerror(-err));
			return err;
		}
		req.url = url;
		req.headers = hdrs;
		ne = net_client_request(s->client, &req, rep);
		curl_slist_free_all(hdrs);
		free(url);
		if (rep->code == CURLE_OK)
			ne = s3_reply_error(rep, &doc);
		if (!net_error_is_retryable(ne) || retry >= S3_SYNC_RETRIES) {
			if (rep->code == CURLE_OK)
				return 0; /* the caller describes an HTTP failure */
			net_reply_describe_transport(rep, s->addr.scheme_host, errbuf, errlen);
			net_reply_done(rep);
			return net_error_to_errno(ne);
		}
		log_debug("s3: %s %s: %s%s%s, retrying", method, key, net_error_str(ne),
			doc.code[0] ? " " : "", doc.code);
		ms = net_backoff_ms(retry, S3_BACKOFF_MS, S3_BACKOFF_MAX_MS, rep->retry_after_ms);
		net_reply_done(rep);
		nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000L }, NULL);
	}
}

/* Lists one page under prefix. token may be NULL; max_keys 0 means the server's default. */
static int s3_list_page(struct remote_s3 *s, const char *prefix, const char *token,
	unsigned max_keys, struct s3_list_page *page, char *errbuf, size_t errlen)
{
	struct s3_kv q[6];
	size_t nq = 0;
	char mk[16];
	struct net_reply rep;
	int err;

	q[nq++] = (struct s3_kv){ "list-type", "2" };
	q[nq++] = (struct s3_kv){ "delimiter", "/" };
	q[nq++] = (struct s3_kv){ "encoding-type", "url" };
	q[nq++] = (struct s3_kv){ "prefix", prefix };
	if (token)
		q[nq++] = (struct s3_kv){ "continuation-token", token };
	if (max_keys) {
		snprintf(mk, sizeof(mk), "%u", max_keys);
		q[nq++] = (struct s3_kv){ "max-keys", mk };
	}
	err = s3_request(s, "GET", "", q, nq, &rep, errbuf, errlen);
	if (err)
		return err;
	if (rep.status != 200) {
		err = s3_describe(s, prefix, &rep, errbuf, errlen);
		goto out;
	}
	err = s3_list_parse(rep.body ? rep.body : "", rep.body_bytes, page, errbuf, errlen);
out:
	net_reply_done(&rep);
	return err;
}

/* ---- names ---- */

/* Is a path given to list/stat made only of safe components (url_name_is_safe)? */
static bool path_is_safe(const char *path)
{
	return !*path || url_path_is_safe(path);
}

static void note_unsafe(struct remote_s3 *s, const char *key, size_t key_bytes)
{
	bool expected = false;

	atomic_fetch_add(&s->nr_unsafe, 1);
	if (atomic_compare_exchange_strong(&s->warned_unsafe, &expected, true))
		log_warn("s3://%s: hiding keys that are unsafe as file names (empty components, "
			 "'.', '..', NUL, over %d bytes), e.g. '%.*s'",
			s->bucket, URL_NAME_MAX,
			(int)(key_bytes > 200 ? 200 : strnlen(key, key_bytes)), key);
	else
		log_debug("s3://%s: hiding unsafe key '%.*s'", s->bucket, 200, key);
}

static void note_collision(struct remote_s3 *s, const char *dir, const char *name)
{
	bool expected = false;

	atomic_fetch_add(&s->nr_collisions, 1);
	if (atomic_compare_exchange_strong(&s->warned_collision, &expected, true))
		log_warn("s3://%s: '%s%s' is both an object and a prefix; showing the directory "
			 "(further collisions are not reported)",
			s->bucket, dir, name);
}

struct dir_entry {
	char *name;
	bool is_dir;
	uint64_t size;
	struct timespec mtime;
	char *etag;
};

static int cmp_dir_entry(const void *a, const void *b)
{
	const struct dir_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return (int)y->is_dir - (int)x->is_dir; /* the directory first: it wins */
}

struct dir_list {
	struct dir_entry *v;
	size_t n, cap;
};

static void dir_list_done(struct dir_list *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->v[i].name);
		free(d->v[i].etag);
	}
	free(d->v);
}

static int dir_list_add(struct dir_list *d, const char *name, bool is_dir, uint64_t size,
	struct timespec mtime, const char *etag)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 256;
		if (cap > S3_MAX_DIR_ENTRIES)
			return -EFBIG;
		void *v = realloc(d->v, cap * sizeof(*d->v));
		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	struct dir_entry *e = &d->v[d->n];
	if (!remote_etag_is_version(etag))
		etag = NULL; /* `*` pins nothing: versioned by LastModified and Size instead */
	e->name = strdup(name);
	e->etag = etag ? strdup(etag) : NULL;
	if (!e->name || (etag && !e->etag)) {
		free(e->name);
		free(e->etag);
		return -ENOMEM;
	}
	e->is_dir = is_dir;
	e->size = size;
	e->mtime = mtime;
	d->n++;
	return 0;
}

/* ---- remote_ops ---- */

static int s3_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	struct remote_s3 *s = (struct remote_s3 *)r;
	struct dir_list d = { 0 };
	char *dir = NULL, *token = NULL;
	char errbuf[512];
	size_t dir_len;
	bool saw_any = false; /* keys under dir, shown or hidden */
	int err = 0;

	if (s->single_file)
		return -ENOTDIR;
	if (!path_is_safe(path))
		return -ENOENT;
	if (asprintf(&dir, "%s%s%s", s->prefix, path, *path ? "/" : "") < 0)
		return -ENOMEM;
	dir_len = strlen(dir);

	/* The whole directory first: "a" and "a/" may sit on different pages, and the
	 * directory must win wherever they are. */
	for (;;) {
		struct s3_list_page page;
		err = s3_list_page(s, dir, token, 0, &page, errbuf, sizeof(errbuf));
		if (err) {
			log_error("listing s3://%s/%s: %s", s->bucket, dir, errbuf);
			goto out;
		}
		saw_any |= page.nr_objects || page.nr_prefixes;
		for (size_t i = 0; !err && i < page.nr_objects; i++) {
			const struct s3_list_object *o = &page.objects[i];
			if (o->key_bytes < dir_len || memcmp(o->key, dir, dir_len))
				continue; /* not under the prefix: a broken server; ignore */
			const char *name = o->key + dir_len;
			size_t name_bytes = o->key_bytes - dir_len;
			if (name_bytes == 0)
				continue; /* "dir/" itself: a console's folder marker */
			if (!url_name_is_safe(name, name_bytes)) {
				note_unsafe(s, o->key, o->key_bytes);
				continue;
			}
			err = dir_list_add(&d, name, false, o->size, o->mtime, o->etag);
		}
		for (size_t i = 0; !err && i < page.nr_prefixes; i++) {
			struct s3_list_prefix *p = &page.prefixes[i];
			if (p->prefix_bytes <= dir_len || memcmp(p->prefix, dir, dir_len) ||
				p->prefix[p->prefix_bytes - 1] != '/')
				continue;
			p->prefix[p->prefix_bytes - 1] = '\0';
			const char *name = p->prefix + dir_len;
			size_t name_bytes = p->prefix_bytes - 1 - dir_len;
			if (!url_name_is_safe(name, name_bytes)) {
				p->prefix[p->prefix_bytes - 1] = '/';
				note_unsafe(s, p->prefix, p->prefix_bytes);
				continue;
			}
			err = dir_list_add(&d, name, true, 0, (struct timespec){ 0 }, NULL);
		}
		bool more = page.is_truncated;
		if (!err && more) {
			/* A server that hands back the token it was given would loop forever. */
			if (token && !strcmp(token, page.next_token)) {
				log_error("listing s3://%s/%s: the server repeats its continuation "
					  "token",
					s->bucket, dir);
				err = -EIO;
			} else {
				free(token);
				token = strdup(page.next_token);
				if (!token)
					err = -ENOMEM;
			}
		}
		s3_list_page_done(&page);
		if (err || !more)
			break;
	}
	if (err)
		goto out;
	if (!saw_any && *path) {
		err = -ENOENT; /* S3 has no empty directories: nothing under it, no directory */
		goto out;
	}
	if (d.n)
		qsort(d.v, d.n, sizeof(*d.v), cmp_dir_entry);
	for (size_t i = 0; i < d.n; i++) {
		if (i && !strcmp(d.v[i].name, d.v[i - 1].name)) {
			if (d.v[i - 1].is_dir && !d.v[i].is_dir)
				note_collision(s, dir, d.v[i].name);
			continue;
		}
		struct remote_entry e = {
			.name = d.v[i].name,
			.type = d.v[i].is_dir ? REMOTE_DIR : REMOTE_FILE,
			.size = d.v[i].size,
			.mtime = d.v[i].mtime,
			.etag = d.v[i].etag,
		};
		err = cb(arg, &e);
		if (err)
			break;
	}
out:
	dir_list_done(&d);
	free(token);
	free(dir);
	return err;
}

static int fill_entry(struct remote_entry *out, const char *path, enum remote_type type,
	uint64_t size, time_t mtime, const char *etag)
{
	const char *slash = strrchr(path, '/');

	memset(out, 0, sizeof(*out));
	if (!remote_etag_is_version(etag))
		etag = NULL; /* `*` pins nothing: versioned by Last-Modified and size instead */
	out->name = strdup(slash ? slash + 1 : path);
	out->etag = etag ? strdup(etag) : NULL;
	if (!out->name || (etag && !out->etag)) {
		free(out->name);
		free(out->etag);
		memset(out, 0, sizeof(*out));
		return -ENOMEM;
	}
	out->type = type;
	out->size = size;
	out->mtime.tv_sec = mtime;
	return 0;
}

/* HEAD of key: 0 and a file entry, -ENOENT, or another -errno (with errbuf). */
static int s3_head(struct remote_s3 *s, const char *key, const char *path, struct remote_entry *out,
	char *errbuf, size_t errlen)
{
	struct net_reply rep;
	int err;

	err = s3_request(s, "HEAD", key, NULL, 0, &rep, errbuf, errlen);
	if (err)
		return err;
	if (rep.status == 200) {
		if (!rep.has_length) {
			snprintf(errbuf, errlen, "s3://%s/%s: HEAD without a Content-Length",
				s->bucket, key);
			err = -EBADMSG;
		} else {
			err = fill_entry(out, path, REMOTE_FILE, rep.content_length,
				rep.last_modified, rep.etag);
		}
	} else if (rep.status == 404) {
		snprintf(errbuf, errlen, "s3://%s/%s: no such key", s->bucket, key);
		err = -ENOENT;
	} else {
		err = s3_describe(s, key, &rep, errbuf, errlen);
	}
	net_reply_done(&rep);
	return err;
}

static int s3_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	struct remote_s3 *s = (struct remote_s3 *)r;
	struct s3_list_page page;
	char errbuf[512], *key, *dir;
	int err;

	if (s->single_file) {
		if (*path)
			return -ENOENT;
		err = s3_head(s, s->prefix, "", out, errbuf, sizeof(errbuf));
		goto log;
	}
	if (!*path)
		return fill_entry(out, "", REMOTE_DIR, 0, 0, NULL);
	if (!path_is_safe(path))
		return -ENOENT;
	key = key_of(s, path);
	if (!key || asprintf(&dir, "%s/", key) < 0) {
		free(key);
		return -ENOMEM;
	}
	/* A prefix first: when both "a" and "a/..." exist, the directory wins. */
	err = s3_list_page(s, dir, NULL, 1, &page, errbuf, sizeof(errbuf));
	if (!err) {
		bool is_dir = page.nr_objects || page.nr_prefixes;
		s3_list_page_done(&page);
		if (is_dir)
			err = fill_entry(out, path, REMOTE_DIR, 0, 0, NULL);
		else
			err = s3_head(s, key, path, out, errbuf, sizeof(errbuf));
	}
	free(dir);
	free(key);
log:
	if (err && err != -ENOENT)
		log_error("%s", errbuf);
	return err;
}

/* The fetch engine's convention: called on a reset handle for every attempt, it sets the
 * common options, the URL and the headers, never a callback. Every call signs anew, so a retry
 * after a backoff carries a fresh x-amz-date (S3 refuses a signature over 15 minutes old). The
 * range goes in a signed Range header rather than CURLOPT_RANGE: what is signed is what is
 * sent. */
static int s3_prepare_get(struct remote *r, const struct remote_object *obj, uint64_t off,
	uint64_t len, CURL *easy, struct curl_slist **headers)
{
	struct remote_s3 *s = (struct remote_s3 *)r;
	struct s3_kv extra[2];
	size_t nr_extra = 0;
	char range[64], *key, *url;
	int err;

	*headers = NULL;
	if (len == 0 || off + len < off || (obj->size && off + len > obj->size))
		return -EINVAL;
	if (!s->single_file && !path_is_safe(obj->path))
		return -ENOENT;
	key = key_of(s, obj->path);
	if (!key)
		return -ENOMEM;
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		(unsigned long long)(off + len - 1));
	extra[nr_extra++] = (struct s3_kv){ "Range", range };
	if (obj->etag && *obj->etag)
		extra[nr_extra++] = (struct s3_kv){ "If-Match", obj->etag };
	err = s3_address_request(&s->addr, &s->cfg, "GET", key, NULL, 0, extra, nr_extra, NULL,
		&url, headers);
	free(key);
	if (err)
		return err;
	net_client_setup(s->client, easy);
	curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	/* CURLOPT_URL copies the string. */
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, *headers);
	free(url);
	return 0;
}

static void s3_free(struct remote *r)
{
	struct remote_s3 *s = (struct remote_s3 *)r;

	if (!s)
		return;
	net_client_free(s->client);
	aws_config_done(&s->cfg);
	free(s->bucket);
	free(s->prefix);
	s3_address_done(&s->addr);
	free(s);
}

static bool bucket_is_valid(const char *b)
{
	size_t n = strlen(b);

	if (n == 0 || n > 255)
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
			return false;
	return true;
}

static int s3_open(struct remote **out, const char *source, const struct remote_options *opt,
	char *errbuf, size_t errlen)
{
	struct remote_options client_opt = { 0 }; /* verbose 0: see client */
	struct remote_s3 *s;
	struct s3_list_page page;
	const char *b, *slash;
	int err = -ENOMEM;

	*out = NULL;
	if (strncmp(source, "s3://", 5)) {
		snprintf(errbuf, errlen, "not an s3:// source: '%s'", source);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	s->base.ops = &remote_s3_ops;

	b = source + 5;
	slash = strchr(b, '/');
	s->bucket = slash ? strndup(b, (size_t)(slash - b)) : strdup(b);
	if (!s->bucket)
		goto nomem;
	if (!bucket_is_valid(s->bucket)) {
		snprintf(errbuf, errlen, "bad bucket name in '%s'", source);
		err = -EINVAL;
		goto err;
	}
	const char *pfx = slash ? slash + 1 : "";
	while (*pfx == '/')
		pfx++;
	s->prefix = strdup(pfx);
	if (!s->prefix)
		goto nomem;

	struct aws_config_request req = {
		.profile = opt ? opt->profile : NULL,
		.region = opt ? opt->region : NULL,
		.endpoint = opt ? opt->endpoint : NULL,
		.addressing = opt ? opt->addressing : NULL,
		.no_sign_request = opt && opt->no_sign_request,
	};
	err = aws_config_load(&s->cfg, &req, errbuf, errlen);
	if (err)
		goto err;
	if (net_global_init()) {
		snprintf(errbuf, errlen, "cannot initialise libcurl");
		err = -EIO;
		goto err;
	}
	err = s3_address_make(&s->addr, &s->cfg, s->bucket, "S3 endpoint", errbuf, errlen);
	if (err)
		goto err;

	if (opt) {
		client_opt.insecure = opt->insecure;
		client_opt.connect_timeout_ms = opt->connect_timeout_ms;
		client_opt.low_speed_time_s = opt->low_speed_time_s;
		client_opt.ca_file = opt->ca_file;
	}
	s->client = net_client_new(&client_opt);
	if (!s->client)
		goto nomem;

	/* Does the source exist, and may we read it? One small listing answers both, with an
	 * Error document that tells a wrong secret from an unknown key from a missing bucket. */
	size_t plen = strlen(s->prefix);
	bool dir_form = plen == 0 || s->prefix[plen - 1] == '/';
	char *dir;
	if (asprintf(&dir, "%s%s", s->prefix, dir_form ? "" : "/") < 0)
		goto nomem;
	err = s3_list_page(s, dir, NULL, 1, &page, errbuf, errlen);
	if (err) {
		free(dir);
		goto err;
	}
	bool found = page.nr_objects || page.nr_prefixes;
	s3_list_page_done(&page);
	if (!dir_form && found) {
		free(s->prefix);
		s->prefix = dir;
		dir = NULL;
	}
	free(dir);
	if (!found && plen) {
		if (dir_form) {
			snprintf(errbuf, errlen, "s3://%s/%s: no such prefix", s->bucket,
				s->prefix);
			err = -ENOENT;
			goto err;
		}
		struct remote_entry e;
		err = s3_head(s, s->prefix, "", &e, errbuf, errlen);
		if (err == -ENOENT)
			snprintf(errbuf, errlen, "s3://%s/%s: no such object or prefix", s->bucket,
				s->prefix);
		if (err)
			goto err;
		free(e.name);
		free(e.etag);
		s->single_file = true;
	}
	*out = &s->base;
	return 0;
nomem:
	err = -ENOMEM;
	snprintf(errbuf, errlen, "out of memory");
err:
	s3_free(&s->base);
	return err;
}

static const struct remote_http_ops s3_get_ops = {
	.prepare_get = s3_prepare_get,
};

const struct remote_ops remote_s3_ops = {
	.name = "s3",
	.open = s3_open,
	.free = s3_free,
	.list = s3_list,
	.stat = s3_stat,
	.http = &s3_get_ops,
};
