/* The shared chunk tier (tier.h): keys and metadata of the tier's objects, their verification,
 * the GET threads that serve the fetch engine's misses, the PUT queue that fills the tier with
 * what the origin sent, and the circuit breaker in front of both. The tier is a shortcut,
 * never a source of truth: whatever does not verify, or does not come quickly, is left to the
 * origin. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#include <curl/curl.h>

#include "fs/log.h"
#include "fs/remote/aws_config.h"
#include "fs/remote/remote.h"
#include "fs/remote/s3_object.h"
#include "fs/remote/url.h"
#include "fs/tier.h"

#define TIER_MAX_GETS_QUEUED  256 /* beyond this a miss goes to the origin at once */
#define TIER_CHECK_TIMEOUT_MS 5000
/* A GET that waited this long for a thread goes to the origin instead: with every thread on a
 * slow tier, a read would otherwise wait out several timeouts in a row. */
#define TIER_QUEUE_WAIT_NS (2000ull * 1000000ull)

/* A GET or a PUT waiting for a thread. The strings of id point at path and version. */
struct tier_req {
	struct tier_req *next;
	struct tier_chunk_id id;
	char *path, *version;
	void *buf;      /* GET: the caller's; PUT: our copy of the bytes (NULL when later) */
	void *handle;   /* a PUT waiting by name: where reload reads its bytes */
	tier_get_cb cb; /* GET only */
	void *arg;
	bool probe; /* admitted as the breaker's one try */
	uint64_t queued_ns;
};

/* The queues, the breaker and stop are protected by lock; the counters are atomics; the rest
 * is set by tier_open and read-only after. */
struct tier {
	struct s3_bucket *b;
	char *bucket, *prefix, *url;
	uint64_t source_id;
	pthread_mutex_t lock;
	pthread_cond_t get_cond, put_cond;
	struct tier_req *gets, **gets_tail;
	unsigned nr_gets;
	struct tier_req *puts, **puts_tail;
	struct tier_req *later, **later_tail; /* PUTs waiting by name, taken after puts */
	unsigned nr_later;
	uint64_t put_bytes_queued; /* queued and in flight: the bound (put_queue_max) is on these */
	uint64_t put_queue_max;
	uint64_t nr_puts_pending;  /* chunks queued, waiting by name or being PUT */
	struct tier_reload reload; /* set before the first PUT; read-only after */
	bool stop;
	atomic_bool aborted;
	/* the breaker */
	enum tier_state state;
	unsigned nr_fails;  /* in a row */
	uint64_t retry_ns;  /* DOWN/DENIED: when one request may try again */
	bool probing;       /* that request is out */
	bool warned_denied; /* one warning for a 403, not one every 5 minutes */
	pthread_t get_threads[TIER_GET_THREADS], put_threads[TIER_PUT_THREADS];
	unsigned nr_get_threads, nr_put_threads;
	atomic_uint_fast64_t hits, bytes, misses, rejected, errors, nr_put, put_bytes, dropped;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *tier_state_name(enum tier_state s)
{
	switch (s) {
	case TIER_UP:
		return "up";
	case TIER_DOWN:
		return "down";
	case TIER_DENIED:
		return "denied";
	default:
		return "off";
	}
}

/* ---- the format ---- */

static uint64_t name_hash(const char *path, const char *version)
{
	XXH3_state_t *st = XXH3_createState();
	uint64_t h;

	if (!st)
		return 0;
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, path, strlen(path) + 1); /* with its NUL */
	XXH3_64bits_update(st, version, strlen(version));
	h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

char *tier_key(const char *prefix, const struct tier_chunk_id *id)
{
	char *k;

	if (asprintf(&k, "%sferry-v1/%016" PRIx64 "/%016" PRIx64 "/%" PRIu64, prefix, id->source_id,
		    name_hash(id->path, id->version), id->idx) < 0)
		return NULL;
	return k;
}

static const char *const meta_names[TIER_NR_META] = {
	"ferry-format",
	"ferry-source",
	"ferry-path",
	"ferry-version",
	"ferry-offset",
	"ferry-length",
	"ferry-xxh3",
};

/* The values of every field but ferry-xxh3, which the bytes give. */
static int meta_values(const struct tier_chunk_id *id, char **vals)
{
	memset(vals, 0, TIER_NR_META * sizeof(*vals));
	vals[0] = strdup(TIER_FORMAT);
	if (asprintf(&vals[1], "%016" PRIx64, id->source_id) < 0)
		vals[1] = NULL;
	/* Percent-encoded: a header value carries neither newlines nor, reliably, non-ASCII. */
	vals[2] = url_encode_component(id->path);
	vals[3] = url_encode_component(id->version);
	if (asprintf(&vals[4], "%" PRIu64, id->off) < 0)
		vals[4] = NULL;
	if (asprintf(&vals[5], "%" PRIu64, id->len) < 0)
		vals[5] = NULL;
	for (int i = 0; i < TIER_NR_META - 1; i++)
		if (!vals[i])
			return -ENOMEM;
	return 0;
}

void tier_meta_done(struct tier_meta *m)
{
	for (int i = 0; i < TIER_NR_META; i++) {
		free(m->vals[i]);
		m->vals[i] = NULL;
	}
}

int tier_meta_make(const struct tier_chunk_id *id, const void *buf, struct s3_kv *kv,
	struct tier_meta *m)
{
	int ret = meta_values(id, m->vals);

	if (!ret && asprintf(&m->vals[6], "%016" PRIx64, (uint64_t)XXH3_64bits(buf, id->len)) < 0) {
		m->vals[6] = NULL;
		ret = -ENOMEM;
	}
	if (ret) {
		tier_meta_done(m);
		return ret;
	}
	for (int i = 0; i < TIER_NR_META; i++)
		kv[i] = (struct s3_kv){ meta_names[i], m->vals[i] };
	return 0;
}

static const char *meta_find(const struct s3_kv *meta, size_t nr_meta, const char *name)
{
	const char *found = NULL;

	for (size_t i = 0; i < nr_meta; i++) {
		if (strcmp(meta[i].name, name))
			continue;
		if (found)
			return NULL; /* twice: which one would be meant? */
		found = meta[i].value;
	}
	return found;
}

bool tier_verify(const struct tier_chunk_id *id, const struct s3_kv *meta, size_t nr_meta,
	const void *buf, uint64_t got)
{
	char *want[TIER_NR_META], hash[17];
	bool ok = false;
	int i;

	if (got != id->len)
		return false;
	if (meta_values(id, want))
		goto out;
	snprintf(hash, sizeof(hash), "%016" PRIx64, (uint64_t)XXH3_64bits(buf, (size_t)got));
	want[6] = hash;
	for (i = 0; i < TIER_NR_META; i++) {
		const char *v = meta_find(meta, nr_meta, meta_names[i]);

		if (!v || strcmp(v, want[i]))
			goto out;
	}
	ok = true;
out:
	want[6] = NULL;
	for (i = 0; i < TIER_NR_META; i++)
		free(want[i]);
	return ok;
}

int tier_parse_url(const char *url, char **bucket, char **prefix, char *errbuf, size_t errlen)
{
	const char *b, *slash, *p;
	size_t n;

	*bucket = *prefix = NULL;
	if (strncmp(url, "s3://", 5) || !url[5] || url[5] == '/') {
		snprintf(errbuf, errlen, "bad --shared-cache '%s': expected s3://BUCKET[/PREFIX]",
			url);
		return -EINVAL;
	}
	b = url + 5;
	slash = strchr(b, '/');
	n = slash ? (size_t)(slash - b) : strlen(b);
	for (const char *c = b; c < b + n; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			    (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_')) {
			snprintf(errbuf, errlen, "bad bucket name in --shared-cache '%s'", url);
			return -EINVAL;
		}
	}
	if (n > 255) {
		snprintf(errbuf, errlen, "bad bucket name in --shared-cache '%s'", url);
		return -EINVAL;
	}
	p = slash ? slash + 1 : "";
	while (*p == '/')
		p++;
	*bucket = strndup(b, n);
	n = strlen(p);
	if (n && p[n - 1] != '/') {
		if (asprintf(prefix, "%s/", p) < 0)
			*prefix = NULL;
	} else {
		*prefix = strdup(p);
	}
	if (!*bucket || !*prefix) {
		free(*bucket);
		free(*prefix);
		*bucket = *prefix = NULL;
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* ---- the breaker ---- */

/* Whether a request may go to the tier now; under t->lock. Down or denied, the first request
 * after the wait is the one try (probe). */
static bool admit(struct tier *t, bool *probe)
{
	*probe = false;
	if (t->state == TIER_UP)
		return true;
	if (t->probing || now_ns() < t->retry_ns)
		return false;
	t->probing = true;
	*probe = true;
	return true;
}

/* The tier answered (a hit, a 404, a rejected object: it is there). */
static void note_answer(struct tier *t, bool probe)
{
	pthread_mutex_lock(&t->lock);
	if (probe)
		t->probing = false;
	if (t->state != TIER_UP) {
		log_warn("shared cache %s is back: reads use it again", t->url);
		t->state = TIER_UP;
		t->warned_denied = false;
	}
	t->nr_fails = 0;
	pthread_mutex_unlock(&t->lock);
}

static void note_failure(struct tier *t, bool probe, bool denied, const char *why)
{
	if (atomic_load(&t->aborted))
		return; /* cut short by a daemon that stops, not the tier's fault */
	atomic_fetch_add(&t->errors, 1);
	pthread_mutex_lock(&t->lock);
	if (probe)
		t->probing = false;
	if (denied) {
		if (t->state != TIER_DENIED && !t->warned_denied)
			log_warn("shared cache %s: access denied (%s): reads go to the origin, "
				 "retried every %d s",
				t->url, why, TIER_DENIED_S);
		t->warned_denied = true;
		t->state = TIER_DENIED;
		t->retry_ns = now_ns() + TIER_DENIED_S * 1000000000ull;
	} else if (probe || ++t->nr_fails >= TIER_FAILS_TO_DOWN) {
		if (t->state == TIER_UP)
			log_warn("shared cache %s is down (%s): reads go to the origin, retried in "
				 "%d s",
				t->url, why, TIER_DOWN_S);
		t->state = TIER_DOWN;
		t->retry_ns = now_ns() + TIER_DOWN_S * 1000000000ull;
		t->nr_fails = 0;
	}
	pthread_mutex_unlock(&t->lock);
}

static const char *why_of(const struct s3_object_reply *rep, char *buf, size_t len)
{
	if (rep->status)
		snprintf(buf, len, "HTTP %ld%s%s", rep->status, rep->s3_code[0] ? " " : "",
			rep->s3_code);
	else
		snprintf(buf, len, "%s", rep->curl_err[0] ? rep->curl_err : net_error_str(rep->ne));
	return buf;
}

/* ---- requests ---- */

static void req_free(struct tier_req *r, bool own_buf)
{
	if (!r)
		return;
	if (own_buf)
		free(r->buf);
	free(r->path);
	free(r->version);
	free(r);
}

static struct tier_req *req_new(const struct tier_chunk_id *id)
{
	struct tier_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->id = *id;
	r->path = strdup(id->path);
	r->version = strdup(id->version);
	if (!r->path || !r->version) {
		req_free(r, false);
		return NULL;
	}
	r->id.path = r->path;
	r->id.version = r->version;
	return r;
}

/* One GET; 0 when buf now holds the chunk's verified bytes. */
static int do_get(struct tier *t, CURL *easy, struct tier_req *r)
{
	struct s3_object_reply rep;
	char why[320], *key = tier_key(t->prefix, &r->id);
	int ret;

	if (!key)
		return -ENOMEM;
	s3_object_get(t->b, easy, key, r->buf, (size_t)r->id.len, TIER_GET_TIMEOUT_MS, &rep);
	if (rep.ne == NET_OK || rep.too_large) {
		note_answer(t, r->probe);
		if (!rep.too_large &&
			tier_verify(&r->id, rep.meta, rep.nr_meta, r->buf, rep.body_bytes)) {
			atomic_fetch_add(&t->hits, 1);
			atomic_fetch_add(&t->bytes, r->id.len);
			ret = 0;
		} else {
			/* Never served: a damaged object, another chunk's, another format's. */
			atomic_fetch_add(&t->rejected, 1);
			log_debug("shared cache: %s does not verify, fetched from the origin", key);
			ret = -EBADMSG;
		}
	} else if (rep.ne == NET_HTTP_404) {
		note_answer(t, r->probe);
		atomic_fetch_add(&t->misses, 1);
		ret = -ENOENT;
	} else {
		note_failure(t, r->probe, rep.ne == NET_HTTP_403, why_of(&rep, why, sizeof(why)));
		ret = rep.ne == NET_HTTP_403 ? -EACCES : -EIO;
	}
	s3_object_reply_done(&rep);
	free(key);
	return ret;
}

static void do_put(struct tier *t, CURL *easy, struct tier_req *r)
{
	struct s3_kv kv[TIER_NR_META];
	struct tier_meta m = { 0 };
	struct s3_object_reply rep;
	char why[320], *key = tier_key(t->prefix, &r->id);

	if (!key || tier_meta_make(&r->id, r->buf, kv, &m)) {
		free(key);
		atomic_fetch_add(&t->dropped, 1);
		return;
	}
	/* The same key always gets the same bytes and metadata: two nodes that PUT one chunk
	 * at once leave the same object, whichever lands last. */
	s3_object_put(t->b, easy, key, r->buf, (size_t)r->id.len, kv, TIER_NR_META,
		TIER_PUT_TIMEOUT_MS, &rep);
	if (rep.ne == NET_OK) {
		note_answer(t, r->probe);
		atomic_fetch_add(&t->nr_put, 1);
		atomic_fetch_add(&t->put_bytes, r->id.len);
	} else {
		note_failure(t, r->probe, rep.ne == NET_HTTP_403, why_of(&rep, why, sizeof(why)));
		atomic_fetch_add(&t->dropped, 1);
	}
	s3_object_reply_done(&rep);
	tier_meta_done(&m);
	free(key);
}

static void *get_main(void *arg)
{
	struct tier *t = arg;
	CURL *easy = curl_easy_init();

	for (;;) {
		struct tier_req *r;
		bool go;
		int ret;

		pthread_mutex_lock(&t->lock);
		while (!t->gets && !t->stop)
			pthread_cond_wait(&t->get_cond, &t->lock);
		r = t->gets;
		if (r) {
			t->gets = r->next;
			if (!t->gets)
				t->gets_tail = &t->gets;
			t->nr_gets--;
		}
		/* Queued while up, but the tier went down since, or it waited too long: not
		 * worth a timeout. */
		go = r && (r->probe || t->state == TIER_UP) && !atomic_load(&t->aborted) &&
		     now_ns() - r->queued_ns < TIER_QUEUE_WAIT_NS;
		if (r && r->probe && !go)
			t->probing = false;
		pthread_mutex_unlock(&t->lock);
		if (!r)
			break;
		ret = go && easy ? do_get(t, easy, r) : -ECANCELED;
		r->cb(r->arg, ret);
		req_free(r, false);
	}
	curl_easy_cleanup(easy);
	return NULL;
}

/* The next PUT, under t->lock: one whose bytes are queued first (they hold memory), then one
 * waiting by name. */
static struct tier_req *next_put(struct tier *t)
{
	struct tier_req *r = t->puts;

	if (r) {
		t->puts = r->next;
		if (!t->puts)
			t->puts_tail = &t->puts;
		return r;
	}
	r = t->later;
	if (r) {
		t->later = r->next;
		if (!t->later)
			t->later_tail = &t->later;
		t->nr_later--;
	}
	return r;
}

/* A PUT waiting by name reads its bytes back from where the caller keeps them; false when they
 * are gone (evicted, damaged) or there is no memory. */
static bool reload_bytes(struct tier *t, struct tier_req *r)
{
	r->buf = malloc(r->id.len ? (size_t)r->id.len : 1);
	return r->buf && t->reload.read(r->handle, &r->id, r->buf) == 0;
}

static void *put_main(void *arg)
{
	struct tier *t = arg;
	CURL *easy = curl_easy_init();

	for (;;) {
		struct tier_req *r;
		bool go, later;

		pthread_mutex_lock(&t->lock);
		while (!t->puts && !t->later && !t->stop)
			pthread_cond_wait(&t->put_cond, &t->lock);
		r = next_put(t);
		if (!r) {
			pthread_mutex_unlock(&t->lock);
			break;
		}
		later = !r->buf;
		go = !t->stop && easy && admit(t, &r->probe);
		pthread_mutex_unlock(&t->lock);
		if (go && later && !reload_bytes(t, r)) {
			go = false;
			if (r->probe) { /* the breaker's one try was not made: another may be */
				pthread_mutex_lock(&t->lock);
				t->probing = false;
				pthread_mutex_unlock(&t->lock);
			}
		}
		if (go)
			do_put(t, easy, r);
		else
			atomic_fetch_add(&t->dropped, 1);
		if (later)
			t->reload.release(r->handle);
		pthread_mutex_lock(&t->lock);
		if (!later)
			t->put_bytes_queued -= r->id.len;
		t->nr_puts_pending--;
		pthread_mutex_unlock(&t->lock);
		req_free(r, true);
	}
	curl_easy_cleanup(easy);
	return NULL;
}

int tier_get(struct tier *t, const struct tier_chunk_id *id, void *buf, tier_get_cb cb, void *arg)
{
	struct tier_req *r;
	bool probe;

	if (!t || atomic_load(&t->aborted))
		return -EAGAIN;
	pthread_mutex_lock(&t->lock);
	/* A cheap look first: a down tier costs a read nothing. */
	if (t->stop || t->nr_gets >= TIER_MAX_GETS_QUEUED ||
		(t->state != TIER_UP && (t->probing || now_ns() < t->retry_ns))) {
		pthread_mutex_unlock(&t->lock);
		return -EAGAIN;
	}
	pthread_mutex_unlock(&t->lock);
	r = req_new(id);
	if (!r)
		return -EAGAIN;
	r->buf = buf;
	r->cb = cb;
	r->arg = arg;
	pthread_mutex_lock(&t->lock);
	if (t->stop || !admit(t, &probe)) {
		pthread_mutex_unlock(&t->lock);
		req_free(r, false);
		return -EAGAIN;
	}
	r->probe = probe;
	r->queued_ns = now_ns();
	*t->gets_tail = r;
	t->gets_tail = &r->next;
	t->nr_gets++;
	pthread_cond_signal(&t->get_cond);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

void tier_set_reload(struct tier *t, const struct tier_reload *reload)
{
	if (t)
		t->reload = *reload;
}

/* Queues a PUT of id's chunk to be read back later (tier_put found the queue full); false when
 * that queue is full too. */
static bool put_later(struct tier *t, const struct tier_chunk_id *id, void *handle)
{
	struct tier_req *r;

	pthread_mutex_lock(&t->lock);
	if (t->nr_later >= TIER_PUT_LATER_MAX) {
		pthread_mutex_unlock(&t->lock);
		return false;
	}
	t->nr_later++; /* taken before the copy, as the queue's bytes are */
	pthread_mutex_unlock(&t->lock);
	r = req_new(id);
	if (r) { /* the caller's lock is never taken under ours */
		t->reload.hold(handle);
		r->handle = handle;
	}
	pthread_mutex_lock(&t->lock);
	if (!r || t->stop) {
		t->nr_later--;
		pthread_mutex_unlock(&t->lock);
		if (r)
			t->reload.release(handle);
		req_free(r, false);
		return false;
	}
	t->nr_puts_pending++;
	*t->later_tail = r;
	t->later_tail = &r->next;
	pthread_cond_signal(&t->put_cond);
	pthread_mutex_unlock(&t->lock);
	return true;
}

void tier_put(struct tier *t, const struct tier_chunk_id *id, const void *buf, void *handle)
{
	struct tier_req *r;
	bool up, room;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	/* The room is taken before the copy, so two threads cannot pass the bound together. */
	up = !t->stop && !atomic_load(&t->aborted) &&
	     (t->state == TIER_UP || now_ns() >= t->retry_ns);
	room = up && t->put_bytes_queued + id->len <= t->put_queue_max;
	if (room) {
		t->put_bytes_queued += id->len;
		t->nr_puts_pending++;
	}
	pthread_mutex_unlock(&t->lock);
	if (!room) {
		if (!up || !handle || !t->reload.read || !put_later(t, id, handle))
			atomic_fetch_add(&t->dropped, 1);
		return;
	}
	r = req_new(id);
	if (r)
		r->buf = malloc(id->len ? (size_t)id->len : 1);
	if (!r || !r->buf) {
		req_free(r, true);
		atomic_fetch_add(&t->dropped, 1);
		pthread_mutex_lock(&t->lock);
		t->put_bytes_queued -= id->len;
		t->nr_puts_pending--;
		pthread_mutex_unlock(&t->lock);
		return;
	}
	memcpy(r->buf, buf, (size_t)id->len);
	pthread_mutex_lock(&t->lock);
	*t->puts_tail = r;
	t->puts_tail = &r->next;
	pthread_cond_signal(&t->put_cond);
	pthread_mutex_unlock(&t->lock);
}

uint64_t tier_source_id(const struct tier *t)
{
	return t->source_id;
}

void tier_get_stats(struct tier *t, struct tier_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	st->state = t->state;
	st->put_queued = t->nr_puts_pending;
	pthread_mutex_unlock(&t->lock);
	st->hits = atomic_load(&t->hits);
	st->bytes = atomic_load(&t->bytes);
	st->misses = atomic_load(&t->misses);
	st->rejected = atomic_load(&t->rejected);
	st->errors = atomic_load(&t->errors);
	st->puts = atomic_load(&t->nr_put);
	st->put_bytes = atomic_load(&t->put_bytes);
	st->puts_dropped = atomic_load(&t->dropped);
}

/* Takes every queued GET off the queue and answers it -ECANCELED (outside the lock: the
 * callback submits to the origin). */
static void cancel_gets(struct tier *t)
{
	struct tier_req *r;

	pthread_mutex_lock(&t->lock);
	r = t->gets;
	t->gets = NULL;
	t->gets_tail = &t->gets;
	t->nr_gets = 0;
	pthread_mutex_unlock(&t->lock);
	while (r) {
		struct tier_req *next = r->next;

		r->cb(r->arg, -ECANCELED);
		req_free(r, false);
		r = next;
	}
}

void tier_abort(struct tier *t)
{
	if (!t)
		return;
	atomic_store(&t->aborted, true);
	cancel_gets(t);
}

void tier_stop(struct tier *t)
{
	unsigned i;

	if (!t)
		return;
	/* Queued PUTs (and those waiting by name) are dropped: an unmount does not wait for the
	 * tier. */
	atomic_store(&t->aborted, true);
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->get_cond);
	pthread_cond_broadcast(&t->put_cond);
	pthread_mutex_unlock(&t->lock);
	for (i = 0; i < t->nr_get_threads; i++)
		pthread_join(t->get_threads[i], NULL);
	for (i = 0; i < t->nr_put_threads; i++)
		pthread_join(t->put_threads[i], NULL);
	t->nr_get_threads = t->nr_put_threads = 0;
	cancel_gets(t);
}

void tier_free(struct tier *t)
{
	if (!t)
		return;
	tier_stop(t);
	while (t->puts) {
		struct tier_req *r = t->puts;

		t->puts = r->next;
		req_free(r, true);
	}
	while (t->later) {
		struct tier_req *r = t->later;

		t->later = r->next;
		t->reload.release(r->handle);
		req_free(r, false);
	}
	s3_bucket_free(t->b);
	pthread_cond_destroy(&t->get_cond);
	pthread_cond_destroy(&t->put_cond);
	pthread_mutex_destroy(&t->lock);
	free(t->bucket);
	free(t->prefix);
	free(t->url);
	free(t);
}

/* Asks the bucket once: an answer that refuses us is the mount's error; no answer is not. */
static int check_bucket(struct tier *t, bool *warned, char *errbuf, size_t errlen)
{
	CURL *easy = curl_easy_init();
	char why[384];
	int ret;

	if (!easy) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = s3_bucket_check(t->b, easy, t->prefix, TIER_CHECK_TIMEOUT_MS, why, sizeof(why));
	curl_easy_cleanup(easy);
	if (ret == -EHOSTUNREACH || ret == -EIO) {
		snprintf(errbuf, errlen,
			"shared cache %s unreachable (%s), reads go to the origin; retried later",
			t->url, why);
		t->state = TIER_DOWN;
		t->retry_ns = now_ns() + TIER_DOWN_S * 1000000000ull;
		*warned = true;
		return 0;
	}
	if (ret)
		snprintf(errbuf, errlen, "shared cache: %s", why);
	return ret;
}

int tier_open(struct tier **out, const struct tier_config *cfg, bool *warned, char *errbuf,
	size_t errlen)
{
	struct tier *t;
	char why[384];
	unsigned i;
	int ret;

	*out = NULL;
	*warned = false;
	t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->get_cond, NULL);
	pthread_cond_init(&t->put_cond, NULL);
	t->gets_tail = &t->gets;
	t->puts_tail = &t->puts;
	t->later_tail = &t->later;
	t->state = TIER_UP;
	t->source_id = cfg->source_id;
	t->put_queue_max = cfg->put_queue_bytes ? cfg->put_queue_bytes : TIER_PUT_QUEUE_BYTES;
	ret = tier_parse_url(cfg->url, &t->bucket, &t->prefix, errbuf, errlen);
	if (ret)
		goto err;
	t->url = strdup(cfg->url);
	if (!t->url) {
		ret = -ENOMEM;
		snprintf(errbuf, errlen, "out of memory");
		goto err;
	}
	struct aws_config_request req = {
		.profile = cfg->profile,
		.region = cfg->region,
		.endpoint = cfg->endpoint,
	};
	ret = s3_bucket_open(&t->b, t->bucket, &req, cfg->remote, why, sizeof(why));
	if (ret) {
		snprintf(errbuf, errlen, "shared cache %s: %s", cfg->url, why);
		goto err;
	}
	s3_bucket_set_abort(t->b, &t->aborted);
	ret = check_bucket(t, warned, errbuf, errlen);
	if (ret)
		goto err;
	for (i = 0; i < TIER_GET_THREADS; i++) {
		ret = -pthread_create(&t->get_threads[i], NULL, get_main, t);
		if (ret)
			goto err_thread;
		t->nr_get_threads++;
	}
	for (i = 0; i < TIER_PUT_THREADS; i++) {
		ret = -pthread_create(&t->put_threads[i], NULL, put_main, t);
		if (ret)
			goto err_thread;
		t->nr_put_threads++;
	}
	*out = t;
	return 0;
err_thread:
	snprintf(errbuf, errlen, "cannot start a thread: %s", strerror(-ret));
err:
	tier_free(t);
	return ret;
}
