/* The shared chunk tier: an S3 bucket that the mounts of a cluster share, between each
 * mount's local chunk cache and the origin. The fetch engine asks it for a chunk before the
 * origin (tier_get: GET threads of its own, short timeouts, every field of the object's
 * metadata and the bytes' XXH3 verified) and hands it every chunk the origin sent (tier_put:
 * a bounded queue drained by PUT threads, dropped when full). A circuit breaker keeps a
 * failing tier out of the way of reads. */
#ifndef FERRY_TIER_H
#define FERRY_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct remote_options;
struct s3_kv;
struct tier;

#define TIER_PUT_QUEUE_BYTES (64ull << 20) /* chunks waiting for their PUT, by default */
#define TIER_GET_THREADS     8
#define TIER_PUT_THREADS     2
#define TIER_PUT_LATER_MAX   65536 /* chunks whose PUT waits for room, named but not copied */
#define TIER_GET_TIMEOUT_MS  10000 /* a whole GET of one chunk */
#define TIER_PUT_TIMEOUT_MS  30000
#define TIER_FAILS_TO_DOWN   3   /* failures in a row that open the breaker */
#define TIER_DOWN_S          30  /* then one request tries the tier again */
#define TIER_DENIED_S        300 /* after a 403 */
#define TIER_FORMAT          "1"

enum tier_state { TIER_OFF, TIER_UP, TIER_DOWN, TIER_DENIED };

struct tier_config {
	const char *url;      /* s3://BUCKET[/PREFIX] */
	const char *endpoint; /* NULL: from the environment or the profile, else AWS */
	const char *region;
	const char *profile;
	const struct remote_options *remote; /* TLS settings (ca_file, insecure) */
	uint64_t source_id;                  /* the source's cache identity (source_id.h) */
	uint64_t put_queue_bytes;            /* the PUT queue's bound; 0: TIER_PUT_QUEUE_BYTES */
};

struct tier_stats {
	enum tier_state state;
	uint64_t hits, bytes, misses, rejected, errors;
	uint64_t puts, put_bytes, puts_dropped;
	uint64_t put_queued; /* chunks queued or being PUT */
};

/* Which chunk: what a tier object's key and metadata are made of. */
struct tier_chunk_id {
	uint64_t source_id;
	const char *path;    /* the object's path in the source */
	const char *version; /* the cache's version name: the ETag, else the mtime as text */
	uint64_t idx, off;
	uint64_t len;
};

/* Splits s3://BUCKET[/PREFIX] (PREFIX gets a trailing '/' when it has none); -EINVAL with a
 * one-line reason. */
int tier_parse_url(const char *url, char **bucket, char **prefix, char *errbuf, size_t errlen);

/* Opens the tier and asks the bucket once. -EINVAL (not an s3:// URL, bad settings),
 * -ENOENT (no such bucket), -EACCES (403), -ENOENT/-EPERM (credentials, as aws_config_load):
 * errors the mount reports. A store that does not answer is no error: the tier starts down,
 * *warned is set and errbuf holds the warning's text. */
int tier_open(struct tier **out, const struct tier_config *cfg, bool *warned, char *errbuf,
	size_t errlen);
/* Stops the threads: queued GETs are answered -ECANCELED, queued PUTs dropped; later GETs are
 * refused and later PUTs dropped, so the caller may still call in until tier_free. */
void tier_stop(struct tier *t);
/* tier_stop, then frees. */
void tier_free(struct tier *t);
/* Answers every queued GET -ECANCELED and cuts transfers in flight short; later GETs are
 * refused. For a daemon that stops. */
void tier_abort(struct tier *t);
void tier_get_stats(struct tier *t, struct tier_stats *st);
/* cfg->source_id of tier_open. */
uint64_t tier_source_id(const struct tier *t);
const char *tier_state_name(enum tier_state s);

/* Called once on a GET thread: 0 and buf holds the chunk's verified bytes, or -errno (a
 * miss, a rejected object, an error, -ECANCELED): the caller goes to the origin. */
typedef void (*tier_get_cb)(void *arg, int result);
/* Queues a GET of id's chunk into buf (id->len bytes). 0: cb will be called; -EAGAIN: the
 * tier is off, down, denied or busy: not asked (cb is not called). id is copied. */
int tier_get(struct tier *t, const struct tier_chunk_id *id, void *buf, tier_get_cb cb, void *arg);
/* Where a chunk's bytes are found again when its PUT had to wait (tier_put with a handle): the
 * caller's local copy. hold takes a reference on handle and release gives it back; read fills
 * buf with id's bytes (id->len of them, verified by the caller) and returns 0, or -errno when
 * they are gone (the PUT is then dropped, counted). Called on the tier's PUT threads. */
struct tier_reload {
	void (*hold)(void *handle);
	void (*release)(void *handle);
	int (*read)(void *handle, const struct tier_chunk_id *id, void *buf);
};
/* Set once, before the first tier_put. */
void tier_set_reload(struct tier *t, const struct tier_reload *reload);
/* Copies the chunk into the PUT queue (put_queue_bytes of tier_config). When the queue is full and the
 * caller names where the bytes are kept (handle, with tier_set_reload), the chunk waits by
 * name (at most TIER_PUT_LATER_MAX of them) and is read back when a PUT thread is free: a
 * node reading faster than the tier takes writes loses none of them. Else, and while the tier
 * is not up, the write is dropped and counted. Never blocks on the network. */
void tier_put(struct tier *t, const struct tier_chunk_id *id, const void *buf, void *handle);

/* ---- the format, for tier.c and the tests ---- */

/* PREFIX + "ferry-v1/<source id in 16 hex>/<XXH3-64 of path NUL version in 16 hex>/<idx>". */
char *tier_key(const char *prefix, const struct tier_chunk_id *id);

/* The metadata of id's chunk with bytes buf (id->len of them): TIER_NR_META name-value pairs
 * (names without "x-amz-meta-") into kv, their values in vals (free with tier_meta_done). */
#define TIER_NR_META 7
struct tier_meta {
	char *vals[TIER_NR_META];
};
int tier_meta_make(const struct tier_chunk_id *id, const void *buf, struct s3_kv *kv,
	struct tier_meta *m);
void tier_meta_done(struct tier_meta *m);

/* Whether a tier object is id's chunk: every field of the metadata (meta, nr_meta, names
 * lower case without "x-amz-meta-") as tier_meta_make would write it, got == id->len, and
 * the bytes' XXH3-64 equal to ferry-xxh3. */
bool tier_verify(const struct tier_chunk_id *id, const struct s3_kv *meta, size_t nr_meta,
	const void *buf, uint64_t got);

#endif
