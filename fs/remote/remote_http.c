/* The HTTP(S) backend: a dataset is a directory URL (listed from its .ferry-manifest when present,
 * else from the server's index pages plus parallel HEADs) or one file URL. The fetch engine reads
 * byte ranges through prepare_get: a ranged GET pinned by If-Match / If-Unmodified-Since. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fs/log.h"
#include "fs/manifest.h"
#include "fs/remote/autoindex.h"
#include "fs/remote/net.h"
#include "fs/remote/net_client.h"
#include "fs/remote/remote.h"
#include "fs/remote/remote_i.h"
#include "fs/remote/url.h"

#define HTTP_HEAD_WINDOW 16           /* HEADs in flight while listing a directory */
#define HTTP_BODY_MAX    (1ull << 30) /* a listing page or manifest larger than this is refused */

/* The backend's state, immutable after open (the client locks its own pool), so list, stat and
 * prepare_get run from any thread without locking. */
struct http_remote {
	struct remote base;
	struct net_client *client;
	char *root_url; /* directory source: ends in '/'; single file: the file's URL */
	char *hostport; /* "host:port", for messages */
	bool single_file;
	struct remote_entry file;   /* single file: the one entry of the root */
	struct manifest_index *man; /* NULL without a manifest */
};

/* One blocking GET or HEAD of url; rep is filled either way (net_reply_done). */
static enum net_error http_do(struct http_remote *h, const char *url, bool head,
	struct net_reply *rep)
{
	struct net_request req = { .url = url, .head = head, .max_body_bytes = HTTP_BODY_MAX };

	return net_client_request(h->client, &req, rep);
}

/* The -errno of a failed listing, stat or open: a 412 or 416 means a changed object only to a
 * pinned ranged read, never here. */
static int http_errno(enum net_error ne)
{
	int err = net_error_to_errno(ne);

	return err == -ESTALE ? -EIO : err;
}

/* Whether a reply redirects to a URL that ends in '/': a directory asked for without it. */
static bool redirects_to_directory(const struct net_reply *r)
{
	return r->code == CURLE_OK && r->status >= 300 && r->status < 400 && r->location &&
	       *r->location && r->location[strlen(r->location) - 1] == '/';
}

/* A one-line reason for a failed request, in the words a user can act on. The URL is shown
 * without its query (url_redact): these lines reach logs and the mount's terminal. */
static void describe(struct http_remote *h, const char *full_url, const struct net_reply *r,
	char *errbuf, size_t errlen)
{
	char *shown;

	if (r->code != CURLE_OK) {
		net_reply_describe_transport(r, h->hostport, errbuf, errlen);
		return;
	}
	shown = url_redact(full_url);
	snprintf(errbuf, errlen, "%s: HTTP %ld%s", shown ? shown : "(URL)", r->status,
		r->status == 404   ? " Not Found"
		: r->status == 403 ? " Forbidden"
				   : "");
	free(shown);
}

static int entry_copy(struct remote_entry *dst, const struct remote_entry *src, const char *name)
{
	*dst = *src;
	dst->name = strdup(name);
	dst->etag = src->etag ? strdup(src->etag) : NULL;
	dst->link_target = src->link_target ? strdup(src->link_target) : NULL;
	if (!dst->name || (src->etag && !dst->etag) || (src->link_target && !dst->link_target)) {
		remote_entry_done(dst);
		return -ENOMEM;
	}
	return 0;
}

/* --- listing from index pages --- */

struct ai_item {
	char *name;
	struct remote_entry e;
	bool gone; /* vanished between the page and its HEAD */
};

struct ai_list {
	struct ai_item *v;
	size_t nr, cap;
};

static int ai_collect(void *arg, const struct autoindex_entry *ae)
{
	struct ai_list *l = arg;
	struct ai_item *it;

	if (l->nr == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct ai_item *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	it = &l->v[l->nr];
	memset(it, 0, sizeof(*it));
	it->name = strdup(ae->name);
	if (!it->name)
		return -ENOMEM;
	it->e.type = ae->type;
	it->e.size = ae->size_exact ? ae->size : 0;
	it->e.mtime.tv_sec = ae->mtime;
	l->nr++;
	return 0;
}

static void ai_free(struct ai_list *l)
{
	size_t i;

	for (i = 0; i < l->nr; i++) {
		free(l->v[i].name);
		remote_entry_done(&l->v[i].e);
	}
	free(l->v);
}

/* Applies a HEAD answer to an item; 0 or -errno. */
static int head_apply(struct ai_item *it, const char *url, struct net_reply *r)
{
	enum net_error ne = net_error_of(r->code, r->status);

	if (ne == NET_HTTP_404) {
		it->gone = true;
		return 0;
	}
	if (redirects_to_directory(r)) {
		it->e.type = REMOTE_DIR; /* a directory linked without its slash */
		it->e.size = 0;
		return 0;
	}
	if (ne != NET_OK) {
		log_warn("HEAD %s: %s (HTTP %ld)", url, net_error_str(ne), r->status);
		return http_errno(ne);
	}
	if (!r->has_length) {
		log_warn("HEAD %s: no Content-Length", url);
		return -EIO;
	}
	it->e.size = r->content_length;
	if (r->last_modified)
		it->e.mtime.tv_sec = r->last_modified, it->e.mtime.tv_nsec = 0;
	it->e.etag = r->etag;
	r->etag = NULL;
	return 0;
}

/* HEADs every file of the list, HTTP_HEAD_WINDOW at a time over one multi handle. */
static int head_all(struct http_remote *h, const char *dir_url, struct ai_list *l)
{
	struct slot {
		CURL *easy;
		struct net_reply resp;
		char *url;
		size_t item;
	} slots[HTTP_HEAD_WINDOW];
	size_t next = 0, active = 0, i;
	int nr_slots = 0, s, ret = 0, still;
	CURLM *multi = curl_multi_init();

	if (!multi)
		return -ENOMEM;
	memset(slots, 0, sizeof(slots));
	for (s = 0; s < HTTP_HEAD_WINDOW; s++) {
		slots[s].easy = curl_easy_init();
		if (!slots[s].easy)
			break;
		nr_slots++;
	}
	if (!nr_slots) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		CURLMsg *msg;

		for (s = 0; s < nr_slots && !ret; s++) {
			if (slots[s].url)
				continue;
			while (next < l->nr && l->v[next].e.type != REMOTE_FILE)
				next++;
			if (next == l->nr)
				break;
			slots[s].url = url_join(dir_url, l->v[next].name, false);
			if (!slots[s].url) {
				ret = -ENOMEM;
				break;
			}
			slots[s].item = next++;
			net_request_start(h->client, slots[s].easy,
				&(struct net_request){ .url = slots[s].url, .head = true },
				&slots[s].resp);
			curl_easy_setopt(slots[s].easy, CURLOPT_PRIVATE, &slots[s]);
			curl_multi_add_handle(multi, slots[s].easy);
			active++;
		}
		if (!active)
			break;
		if (curl_multi_perform(multi, &still) != CURLM_OK) {
			ret = -EIO;
			break;
		}
		while ((msg = curl_multi_info_read(multi, &still))) {
			struct slot *sl;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
			net_request_finish(sl->easy, msg->data.result, &sl->resp);
			curl_multi_remove_handle(multi, sl->easy);
			active--;
			if (!ret)
				ret = head_apply(&l->v[sl->item], sl->url, &sl->resp);
			net_reply_done(&sl->resp);
			free(sl->url);
			sl->url = NULL;
		}
		if (ret && !active)
			break;
		if (active)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
out:
	for (i = 0; i < (size_t)nr_slots; i++) {
		if (slots[i].url) {
			curl_multi_remove_handle(multi, slots[i].easy);
			net_reply_done(&slots[i].resp);
			free(slots[i].url);
		}
		curl_easy_cleanup(slots[i].easy);
	}
	curl_multi_cleanup(multi);
	return ret;
}

static int index_list(struct http_remote *h, const char *path, remote_list_cb cb, void *arg)
{
	char *url = *path ? url_join(h->root_url, path, true) : strdup(h->root_url);
	struct ai_list l = { 0 };
	struct net_reply r;
	enum net_error ne;
	size_t i;
	int ret;

	if (!url)
		return -ENOMEM;
	ne = http_do(h, url, false, &r);
	if (ne != NET_OK) {
		char msg[512];

		describe(h, url, &r, msg, sizeof(msg));
		if (ne != NET_HTTP_404)
			log_warn("listing %s", msg);
		ret = http_errno(ne);
		goto out;
	}
	ret = autoindex_parse(r.body ? r.body : "", r.body_bytes, ai_collect, &l);
	if (!ret)
		ret = head_all(h, url, &l);
	for (i = 0; i < l.nr && !ret; i++) {
		if (l.v[i].gone)
			continue;
		l.v[i].e.name = l.v[i].name;
		ret = cb(arg, &l.v[i].e);
		l.v[i].e.name = NULL;
	}
out:
	ai_free(&l);
	net_reply_done(&r);
	free(url);
	return ret;
}

/* --- the ops --- */

static int http_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	struct http_remote *h = (struct http_remote *)r;

	if (h->single_file) {
		if (*path)
			return !strcmp(path, h->file.name) ? -ENOTDIR : -ENOENT;
		return cb(arg, &h->file);
	}
	if (h->man)
		return manifest_index_list(h->man, path, cb, arg);
	return index_list(h, path, cb, arg);
}

static int http_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	struct http_remote *h = (struct http_remote *)r;
	struct remote_entry root = { .type = REMOTE_DIR };
	struct net_reply resp;
	enum net_error ne;
	char *url;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!*path)
		return entry_copy(out, &root, "");
	if (h->single_file)
		return strcmp(path, h->file.name) ? -ENOENT : entry_copy(out, &h->file, path);
	if (h->man)
		return manifest_index_stat(h->man, path, out);
	url = url_join(h->root_url, path, false);
	if (!url)
		return -ENOMEM;
	ne = http_do(h, url, true, &resp);
	if (resp.code == CURLE_OK && resp.status >= 300 && resp.status < 400) {
		/* nginx and Apache redirect a directory's URL to the same with a slash */
		char *durl = url_join(h->root_url, path, true);

		net_reply_done(&resp);
		free(url);
		if (!durl)
			return -ENOMEM;
		url = durl;
		ne = http_do(h, url, true, &resp);
		root.type = REMOTE_DIR;
		if (ne == NET_OK) {
			root.mtime.tv_sec = resp.last_modified;
			ret = entry_copy(out, &root,
				strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
			goto out;
		}
	} else if (ne == NET_OK) {
		struct ai_item it = { 0 };

		ret = head_apply(&it, url, &resp);
		if (!ret) {
			const char *slash = strrchr(path, '/');

			it.e.type = REMOTE_FILE;
			ret = entry_copy(out, &it.e, slash ? slash + 1 : path);
			remote_entry_done(&it.e);
		}
		goto out;
	}
	ret = http_errno(ne);
out:
	net_reply_done(&resp);
	free(url);
	return ret;
}

static int http_prepare_get(struct remote *r, const struct remote_object *obj, uint64_t off,
	uint64_t len, CURL *easy, struct curl_slist **headers)
{
	struct http_remote *h = (struct http_remote *)r;
	char range[64], hdr[512], date[40];
	struct curl_slist *l = NULL, *n;
	char *url;

	if (len == 0 || off + len > obj->size || off + len < off)
		return -EINVAL;
	url = h->single_file ? strdup(h->root_url) : url_join(h->root_url, obj->path, false);
	if (!url)
		return -ENOMEM;
	net_client_setup(h->client, easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	free(url);
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, off, off + len - 1);
	curl_easy_setopt(easy, CURLOPT_RANGE, range);
	if (obj->etag && *obj->etag) {
		if (strlen(obj->etag) > sizeof(hdr) - 16 || strpbrk(obj->etag, "\r\n"))
			return -EINVAL;
		snprintf(hdr, sizeof(hdr), "If-Match: %s", obj->etag);
	} else if (obj->mtime.tv_sec > 0) {
		net_format_http_date(obj->mtime.tv_sec, date, sizeof(date));
		snprintf(hdr, sizeof(hdr), "If-Unmodified-Since: %s", date);
	} else {
		hdr[0] = '\0';
	}
	if (hdr[0]) {
		n = curl_slist_append(l, hdr);
		if (!n)
			return -ENOMEM;
		l = n;
	}
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, l);
	*headers = l;
	return 0;
}

static void http_free(struct remote *r)
{
	struct http_remote *h = (struct http_remote *)r;

	if (!h)
		return;
	net_client_free(h->client);
	manifest_index_free(h->man);
	remote_entry_done(&h->file);
	free(h->root_url);
	free(h->hostport);
	free(h);
}

/* A directory source: its manifest if it has one, else its index page must answer. */
static int open_dir(struct http_remote *h, char *errbuf, size_t errlen)
{
	char *murl = url_join(h->root_url, MANIFEST_NAME, false);
	struct net_reply r;
	enum net_error ne;
	int ret;

	if (!murl)
		return -ENOMEM;
	ne = http_do(h, murl, false, &r);
	if (ne == NET_OK) {
		char why[400];

		ret = manifest_index_new(&h->man, r.body ? r.body : "", r.body_bytes, why,
			sizeof(why));
		if (ret)
			snprintf(errbuf, errlen, "%s: %s", murl, why);
		goto out;
	}
	if (ne != NET_HTTP_404 && ne != NET_HTTP_403) {
		describe(h, murl, &r, errbuf, errlen);
		ret = http_errno(ne);
		goto out;
	}
	net_reply_done(&r);
	ne = http_do(h, h->root_url, false, &r);
	if (ne != NET_OK) {
		describe(h, h->root_url, &r, errbuf, errlen);
		if (ne == NET_HTTP_403)
			snprintf(errbuf + strlen(errbuf), errlen - strlen(errbuf),
				" (the server must allow directory listing or serve %s)",
				MANIFEST_NAME);
		ret = http_errno(ne);
		goto out;
	}
	ret = 0;
out:
	net_reply_done(&r);
	free(murl);
	return ret;
}

/* A URL without a trailing slash: one file, or a directory the server redirects to its slash. */
static int open_file(struct http_remote *h, const struct url *u, char *errbuf, size_t errlen)
{
	struct net_reply r;
	enum net_error ne;
	char *name = NULL, *shown = NULL;
	int ret;

	ne = http_do(h, h->root_url, true, &r);
	if (redirects_to_directory(&r) && !u->query) {
		char *dir;

		if (asprintf(&dir, "%s/", h->root_url) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		free(h->root_url);
		h->root_url = dir;
		ret = open_dir(h, errbuf, errlen);
		goto out;
	}
	if (ne != NET_OK) {
		describe(h, h->root_url, &r, errbuf, errlen);
		ret = http_errno(ne);
		goto out;
	}
	if (!r.has_length) {
		shown = url_redact(h->root_url);
		snprintf(errbuf, errlen, "%s: the server sent no Content-Length",
			shown ? shown : "(URL)");
		ret = -EIO;
		goto out;
	}
	name = url_basename(u->path);
	if (!name || !url_name_is_safe(name, strlen(name))) {
		shown = url_redact(h->root_url);
		snprintf(errbuf, errlen, "%s: cannot name a file after this URL",
			shown ? shown : "(URL)");
		ret = -EINVAL;
		goto out;
	}
	h->single_file = true;
	h->file.name = name;
	h->file.type = REMOTE_FILE;
	h->file.size = r.content_length;
	h->file.mtime.tv_sec = r.last_modified;
	h->file.etag = r.etag;
	r.etag = NULL;
	name = NULL;
	ret = 0;
out:
	free(shown);
	free(name);
	net_reply_done(&r);
	return ret;
}

static int http_open(struct remote **out, const char *source, const struct remote_options *opt,
	char *errbuf, size_t errlen)
{
	struct remote_options client_opt;
	struct http_remote *h;
	struct url u;
	size_t sl;
	int ret;

	*out = NULL;
	ret = url_parse(&u, source, errbuf, errlen);
	if (ret)
		return ret;
	if (net_global_init()) {
		snprintf(errbuf, errlen, "cannot initialise libcurl");
		url_done(&u);
		return -EIO;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		url_done(&u);
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	h->base.ops = &remote_http_ops;
	client_opt = opt ? *opt : (struct remote_options){ 0 };
	/* libcurl's trace (-vv) prints each request line, query and all: not for a URL whose
	 * query may be a token (the S3 backend never traces, for its session token). */
	if (u.query && client_opt.verbose > 1) {
		log_info("the URL has a query: no libcurl trace, which would print it");
		client_opt.verbose = 1;
	}
	h->client = net_client_new(&client_opt);
	sl = strcspn(source, "#");
	h->root_url = strndup(source, sl);
	if (!h->client || !h->root_url || asprintf(&h->hostport, "%s:%u", u.host, u.port) < 0)
		goto nomem;
	if (u.path[strlen(u.path) - 1] == '/') {
		if (u.query) {
			char *shown = url_redact(source);

			snprintf(errbuf, errlen, "a directory URL cannot have a query: '%s'",
				shown ? shown : "(URL)");
			free(shown);
			ret = -EINVAL;
			goto err;
		}
		ret = open_dir(h, errbuf, errlen);
	} else {
		ret = open_file(h, &u, errbuf, errlen);
	}
	if (ret)
		goto err;
	url_done(&u);
	*out = &h->base;
	return 0;
nomem:
	snprintf(errbuf, errlen, "out of memory");
	ret = -ENOMEM;
err:
	url_done(&u);
	http_free(&h->base);
	return ret;
}

static const struct remote_http_ops http_get_ops = {
	.prepare_get = http_prepare_get,
};

const struct remote_ops remote_http_ops = {
	.name = "http",
	.open = http_open,
	.free = http_free,
	.list = http_list,
	.stat = http_stat,
	.http = &http_get_ops,
};
