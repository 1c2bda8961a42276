/* The chunk cache (see cache.h): chunk states and single flight, LRU and eviction, per-block
 * checksums checked on every read, and a fail-safe mode for a full or failing volume. Sits
 * between the fetch engine (which fills chunks) and the FUSE reads; the files on disk, sync and
 * load are cache_disk.c's. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/cache.h"
#include "fs/cache_i.h"
#include "fs/io.h"
#include "fs/log.h"
#include "fs/remote/remote.h"

static uint64_t chunk_idx(const struct chunk *ch)
{
	return ch->page->first + (uint64_t)(ch - ch->page->ch);
}

static struct cache_object *chunk_obj(const struct chunk *ch)
{
	return ch->page->obj;
}

/* The chunk leaves PRESENT: its sums go. */
static void chunk_clear_sums(const struct cache *c, struct chunk *ch)
{
	if (c->blocks_per_chunk > 1)
		free(ch->sums.many);
	ch->sums.many = NULL;
}

/* libxxhash on x86 also exports XXH3 picking SSE2, AVX2 or AVX-512 at run time: 37 GB/s here
 * against 8-13 GB/s for the plain XXH3_64bits (SSE2), which at ~2 GB/s from disk would add
 * ~20% to every read. Same hash, so the loader's XXH3_64bits agrees. Weak: a library
 * without it links, and the plain one is used. */
extern XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len) __attribute__((weak));

static uint64_t block_hash(const void *p, size_t len)
{
	return XXH3_64bits_dispatch ? XXH3_64bits_dispatch(p, len) : XXH3_64bits(p, len);
}

static void block_sums_of(const void *buf, uint64_t len, uint64_t *sums)
{
	for (uint64_t off = 0, k = 0; off < len; off += CACHE_BLOCK_BYTES, k++)
		sums[k] =
			block_hash((const char *)buf + off, min_u64(CACHE_BLOCK_BYTES, len - off));
}

static uint64_t path_hash_of(const char *path)
{
	return XXH3_64bits(path, strlen(path));
}

/* ---- disk errors and the degraded mode ---- */

/* Errors that say the volume is full or failing, rather than that one file cannot be
 * (EFBIG: an object longer than the file system allows). */
static bool volume_error(int err)
{
	return err == -ENOSPC || err == -EDQUOT || err == -EIO || err == -EROFS;
}

/* Counts one failure of the cache volume; after DEGRADE_AFTER volume errors in a row (no
 * fill succeeding between them) the cache stops storing, with one warning. Other failures
 * are logged at most once a second, and not at all once degraded: a full disk must not
 * flood the log. */
void cache_disk_error(struct cache *c, int err, const char *what, const char *path)
{
	bool became = false, say = false;
	time_t now = time(NULL);

	pthread_mutex_lock(&c->lock);
	c->st.disk_errors++;
	if (!c->st.degraded && volume_error(err) && ++c->fail_run >= DEGRADE_AFTER) {
		c->st.degraded = true;
		became = true;
	} else if (!c->st.degraded && now != c->last_err_log) {
		c->last_err_log = now;
		say = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (became)
		log_warn("cache: %s failed %d times in a row (last: %s %s: %s); degraded: nothing "
			 "more is stored until restart, reads of uncached data go to the source",
			c->dir, DEGRADE_AFTER, what, path, strerror(-err));
	else if (say)
		log_warn("cache: %s %s: %s", what, path, strerror(-err));
}

/* A full volume that eviction made room on: a failed write all the same, counted, but not
 * one of a run towards degrading. */
void cache_disk_full_recovered(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->st.disk_errors++;
	pthread_mutex_unlock(&c->lock);
}

bool cache_degraded(struct cache *c)
{
	bool d;

	pthread_mutex_lock(&c->lock);
	d = c->st.degraded;
	pthread_mutex_unlock(&c->lock);
	return d;
}

/* ---- chunk pages: under c->lock (or single-threaded while loading) ---- */

struct chunk *cache_chunk_find(struct cache_object *o, uint64_t idx)
{
	uint64_t first = idx / CHUNKS_PER_PAGE * CHUNKS_PER_PAGE;
	struct chunk_page *p;

	if (!o->nr_page_buckets)
		return NULL;
	p = o->page_table[(idx / CHUNKS_PER_PAGE) & (o->nr_page_buckets - 1)];
	for (; p; p = p->hash_next)
		if (p->first == first)
			return &p->ch[idx - first];
	return NULL;
}

static void page_table_grow(struct cache_object *o)
{
	uint64_t n = o->nr_page_buckets ? o->nr_page_buckets * 2 : 1;
	struct chunk_page **t = calloc(n, sizeof(*t));

	if (!t)
		return; /* longer chains, still correct (when there is a table at all) */
	for (struct chunk_page *p = o->pages; p; p = p->next) {
		uint64_t b = (p->first / CHUNKS_PER_PAGE) & (n - 1);

		p->hash_next = t[b];
		t[b] = p;
	}
	free(o->page_table);
	o->page_table = t;
	o->nr_page_buckets = n;
}

/* The chunk's state, its page made when first touched; NULL when out of memory. */
struct chunk *cache_chunk_get(struct cache_object *o, uint64_t idx)
{
	struct chunk *ch = cache_chunk_find(o, idx);
	struct chunk_page *p;
	uint64_t b;

	if (ch)
		return ch;
	if (o->nr_pages >= o->nr_page_buckets)
		page_table_grow(o);
	if (!o->nr_page_buckets)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->obj = o;
	p->first = idx / CHUNKS_PER_PAGE * CHUNKS_PER_PAGE;
	for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++)
		p->ch[k].page = p;
	b = (idx / CHUNKS_PER_PAGE) & (o->nr_page_buckets - 1);
	p->hash_next = o->page_table[b];
	o->page_table[b] = p;
	p->next = o->pages;
	o->pages = p;
	o->nr_pages++;
	return &p->ch[idx - p->first];
}

/* Chunks of page p that exist (the last page of an object may be partly past its end). */
unsigned cache_page_nr_chunks(const struct cache_object *o, const struct chunk_page *p)
{
	return (unsigned)min_u64(CHUNKS_PER_PAGE, o->nr_chunks - p->first);
}

/* ---- LRU, flights, tables: all under c->lock ---- */

static void lru_remove(struct cache *c, struct chunk *ch)
{
	(void)c;
	if (!(ch->flags & CH_IN_LRU))
		return;
	ch->lru_prev->lru_next = ch->lru_next;
	ch->lru_next->lru_prev = ch->lru_prev;
	ch->lru_prev = ch->lru_next = NULL;
	ch->flags &= (uint8_t)~CH_IN_LRU;
}

void cache_lru_append(struct cache *c, struct chunk *ch)
{
	ch->lru_prev = c->lru.lru_prev;
	ch->lru_next = &c->lru;
	c->lru.lru_prev->lru_next = ch;
	c->lru.lru_prev = ch;
	ch->flags |= CH_IN_LRU;
}

static int flight_start(struct chunk *ch)
{
	struct flight *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	pthread_cond_init(&f->cond, NULL);
	f->refs = 1;
	ch->flight = f;
	return 0;
}

void cache_flight_unref(struct flight *f)
{
	if (--f->refs == 0) {
		pthread_cond_destroy(&f->cond);
		free(f);
	}
}

/* Takes the landed buffer away from the flight and waits until no waiter copies from it: the
 * fetcher may then free it. Drops c->lock while it waits. */
static void flight_unland(struct cache *c, struct flight *f)
{
	f->landed = NULL;
	while (f->nr_copying)
		pthread_cond_wait(&f->cond, &c->lock);
}

static void flight_finish(struct chunk *ch, int result)
{
	struct flight *f = ch->flight;

	ch->flight = NULL;
	f->done = true;
	f->result = result;
	pthread_cond_broadcast(&f->cond);
	cache_flight_unref(f);
}

void cache_obj_mark_dirty(struct cache *c, struct cache_object *o)
{
	if (!o->on_dirty && !o->stale) {
		o->on_dirty = true;
		o->dirty_next = c->dirty;
		c->dirty = o;
	}
}

/* The chunk's record must be written again by the next sync. */
void cache_mark_dirty(struct cache *c, struct chunk *ch)
{
	ch->page->dirty = true;
	cache_obj_mark_dirty(c, chunk_obj(ch));
}

static void dirty_remove(struct cache *c, struct cache_object *o)
{
	struct cache_object **pp;

	if (!o->on_dirty)
		return;
	for (pp = &c->dirty; *pp; pp = &(*pp)->dirty_next) {
		if (*pp == o) {
			*pp = o->dirty_next;
			break;
		}
	}
	o->on_dirty = false;
}

struct cache_object **cache_table_slot(struct cache *c, const char *path)
{
	struct cache_object **pp = &c->table[path_hash_of(path) & (c->nr_buckets - 1)];

	while (*pp && strcmp((*pp)->path, path) != 0)
		pp = &(*pp)->hash_next;
	return pp;
}

static void table_grow(struct cache *c)
{
	size_t n = c->nr_buckets * 2;
	struct cache_object **t = calloc(n, sizeof(*t));

	if (!t)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < c->nr_buckets; i++) {
		struct cache_object *o = c->table[i], *next;

		for (; o; o = next) {
			size_t b = path_hash_of(o->path) & (n - 1);

			next = o->hash_next;
			o->hash_next = t[b];
			t[b] = o;
		}
	}
	free(c->table);
	c->table = t;
	c->nr_buckets = n;
}

void cache_table_insert(struct cache *c, struct cache_object *o)
{
	struct cache_object **pp;

	if (c->nr_in_table >= c->nr_buckets)
		table_grow(c);
	pp = cache_table_slot(c, o->path);
	o->hash_next = NULL;
	*pp = o;
	c->nr_in_table++;
}

void cache_table_remove(struct cache *c, struct cache_object *o)
{
	struct cache_object **pp = cache_table_slot(c, o->path);

	if (*pp == o) {
		*pp = o->hash_next;
		o->hash_next = NULL;
		c->nr_in_table--;
	}
}

void cache_all_insert(struct cache *c, struct cache_object *o)
{
	o->all_prev = NULL;
	o->all_next = c->all;
	if (c->all)
		c->all->all_prev = o;
	c->all = o;
	c->st.nr_objects++;
}

/* Takes a stale, unreferenced object out of every list; its present chunks stop counting.
 * Nothing can reach it afterwards: the caller deletes it. */
static void obj_detach(struct cache *c, struct cache_object *o)
{
	for (struct chunk_page *p = o->pages; p; p = p->next) {
		for (unsigned k = 0; k < cache_page_nr_chunks(o, p); k++) {
			struct chunk *ch = &p->ch[k];

			if (ch->state == CH_PRESENT) {
				lru_remove(c, ch);
				c->st.used_bytes -= chunk_len(o, p->first + k);
				c->st.nr_chunks--;
			}
		}
	}
	o->cached_bytes = 0;
	dirty_remove(c, o);
	o->dead = true;
	c->st.nr_objects--;
}

static void all_remove(struct cache *c, struct cache_object *o)
{
	if (o->all_prev)
		o->all_prev->all_next = o->all_next;
	else
		c->all = o->all_next;
	if (o->all_next)
		o->all_next->all_prev = o->all_prev;
	o->all_prev = o->all_next = NULL;
}

/* The stale object of this very key, or NULL. */
static struct cache_object *stale_find(struct cache *c, const char *path, const char *version,
	uint64_t size, uint64_t key_hash)
{
	struct cache_object *o;

	for (o = c->stale; o; o = o->stale_next)
		if (o->key_hash == key_hash && o->size == size && strcmp(o->path, path) == 0 &&
			strcmp(o->version, version) == 0)
			return o;
	return NULL;
}

static void stale_remove(struct cache *c, struct cache_object *o)
{
	for (struct cache_object **pp = &c->stale; *pp; pp = &(*pp)->stale_next) {
		if (*pp == o) {
			*pp = o->stale_next;
			break;
		}
	}
	o->stale_next = NULL;
}

/* ---- objects: creation, files, deletion ---- */

void cache_obj_destroy(struct cache_object *o)
{
	struct chunk_page *p, *next;

	if (!o)
		return;
	if (o->data_fd >= 0)
		close(o->data_fd);
	if (o->map_fd >= 0)
		close(o->map_fd);
	pthread_mutex_destroy(&o->io_lock);
	for (p = o->pages; p; p = next) {
		next = p->next;
		for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++)
			if (p->ch[k].state == CH_PRESENT)
				chunk_clear_sums(o->cache, &p->ch[k]);
		free(p);
	}
	free(o->page_table);
	free(o->path);
	free(o->version);
	free(o->etag_copy);
	free(o->data_path);
	free(o->map_path);
	free(o);
}

struct cache_object *cache_obj_new(struct cache *c, const char *path, const char *version,
	uint64_t size, uint64_t key_hash)
{
	struct cache_object *o = calloc(1, sizeof(*o));
	size_t prefix_bytes = strlen(path) + strlen(version) + MAP_HEADER_BYTES;

	if (!o)
		return NULL;
	o->cache = c;
	o->data_fd = o->map_fd = -1;
	pthread_mutex_init(&o->io_lock, NULL);
	o->size = size;
	o->key_hash = key_hash;
	o->nr_chunks = (size + c->chunk_bytes - 1) >> c->chunk_shift;
	o->records_off = (uint32_t)((prefix_bytes + MAP_ALIGN - 1) / MAP_ALIGN * MAP_ALIGN);
	o->sums_off = (o->records_off + o->nr_chunks * MAP_RECORD_BYTES + MAP_SUMS_ALIGN - 1) /
		      MAP_SUMS_ALIGN * MAP_SUMS_ALIGN;
	o->path = strdup(path);
	o->version = strdup(version);
	if (asprintf(&o->data_path, "%s/%02x/%016" PRIx64 ".data", c->dir,
		    (unsigned)(key_hash >> 56), key_hash) < 0)
		o->data_path = NULL;
	if (asprintf(&o->map_path, "%s/%02x/%016" PRIx64 ".map", c->dir, (unsigned)(key_hash >> 56),
		    key_hash) < 0)
		o->map_path = NULL;
	if (!o->path || !o->version || !o->data_path || !o->map_path) {
		cache_obj_destroy(o);
		return NULL;
	}
	return o;
}

void cache_obj_ref_locked(struct cache_object *o)
{
	o->refs++;
}

/* Drops a reference (c->lock not held). The last one closes the descriptors, and deletes
 * a stale object with its files. */
void cache_obj_put(struct cache_object *o)
{
	struct cache *c = o->cache;
	bool last, dead = false;

	/* io_lock before the count drops: once it is 0 and the lock is not held, an opener of
	 * a newer version may detach and free a stale o (a use-after-free, seen under ASan
	 * with three threads opening three versions of one path). Callers hold neither lock. */
	pthread_mutex_lock(&o->io_lock);
	pthread_mutex_lock(&c->lock);
	last = --o->refs == 0;
	if (last && o->stale) {
		obj_detach(c, o);
		dead = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (last) {
		if (o->data_fd >= 0)
			close(o->data_fd);
		if (o->map_fd >= 0)
			close(o->map_fd);
		o->data_fd = o->map_fd = -1;
	}
	if (dead) {
		/* The map first: a data file without a map is an orphan the next open removes. */
		if (o->map_exists && unlink(o->map_path) < 0 && errno != ENOENT)
			log_warn("cache: cannot remove %s: %s", o->map_path, strerror(errno));
		if (o->data_exists && unlink(o->data_path) < 0 && errno != ENOENT)
			log_warn("cache: cannot remove %s: %s", o->data_path, strerror(errno));
	}
	pthread_mutex_unlock(&o->io_lock);
	if (dead) {
		/* Only now may a new object with the same file names be made. */
		pthread_mutex_lock(&c->lock);
		stale_remove(c, o);
		all_remove(c, o);
		pthread_cond_broadcast(&c->dead_cond);
		pthread_mutex_unlock(&c->lock);
		cache_obj_destroy(o);
	}
}

/* ---- eviction ---- */

/* Chooses least-recently used unpinned chunks until used_bytes <= max_bytes and at least
 * need bytes are chosen, or the list is empty. Each victim becomes EVICTING with a flight,
 * stops counting, and its object gets a reference; the caller runs cache_evict_victims() after
 * dropping c->lock. */
struct chunk *cache_pick_victims(struct cache *c, uint64_t need)
{
	struct chunk *victims = NULL;
	uint64_t picked = 0;

	while (((c->max_bytes && c->st.used_bytes > c->max_bytes) || picked < need) &&
		c->lru.lru_next != &c->lru) {
		struct chunk *ch = c->lru.lru_next;
		struct cache_object *o = chunk_obj(ch);
		uint64_t len = chunk_len(o, chunk_idx(ch));

		if (flight_start(ch) < 0)
			break;
		lru_remove(c, ch);
		ch->state = CH_EVICTING;
		chunk_clear_sums(c, ch);
		c->st.used_bytes -= len;
		c->st.nr_chunks--;
		c->st.evictions++;
		o->cached_bytes -= len;
		picked += len;
		cache_obj_ref_locked(o);
		ch->lru_next = victims;
		victims = ch;
	}
	return victims;
}

/* Clears each victim's map record, then punches its bytes out of the data file. */
void cache_evict_victims(struct cache *c, struct chunk *victims)
{
	while (victims) {
		struct chunk *ch = victims;
		struct cache_object *o = chunk_obj(ch);
		uint64_t idx = chunk_idx(ch), len = chunk_len(o, idx);
		struct map_record zero = { 0 };
		ssize_t n;

		victims = ch->lru_next;
		ch->lru_next = NULL;
		pthread_mutex_lock(&o->io_lock);
		if (cache_obj_open_map(o, false) == 0) {
			n = c->io->pwrite(o->map_fd, &zero, sizeof(zero),
				o->records_off + idx * MAP_RECORD_BYTES);
			if (n < 0) {
				/* The record may still say present: the sums catch the hole. */
				pthread_mutex_unlock(&o->io_lock);
				cache_disk_error(c, (int)n, "clearing a record of", o->map_path);
				pthread_mutex_lock(&o->io_lock);
			}
		}
		if (cache_obj_open_data_locked(o, false) == 0 &&
			fallocate(o->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(idx << c->chunk_shift), (off_t)len) < 0)
			log_warn("cache: punching chunk %" PRIu64 " of %s: %s", idx, o->data_path,
				strerror(errno));
		pthread_mutex_unlock(&o->io_lock);
		pthread_mutex_lock(&c->lock);
		ch->state = CH_ABSENT;
		ch->flags = 0;
		cache_mark_dirty(c, ch);
		flight_finish(ch, 0);
		pthread_mutex_unlock(&c->lock);
		cache_obj_put(o);
	}
}

/* Evicts at least need bytes of least recently used unpinned chunks (for a full volume);
 * false when there was nothing to evict. No io_lock held. */
bool cache_make_room(struct cache *c, uint64_t need)
{
	struct chunk *victims;

	pthread_mutex_lock(&c->lock);
	victims = cache_pick_victims(c, need);
	pthread_mutex_unlock(&c->lock);
	if (!victims)
		return false;
	cache_evict_victims(c, victims);
	return true;
}

/* A read found chunk idx damaged (err: -EBADMSG for a block that did not verify, else the
 * read's error): it becomes absent, record cleared and hole punched, and is fetched again.
 * Nothing happens when the chunk changed since the reader copied its sums (gen): someone
 * else dropped it already, or filled it again. */
static void chunk_drop(struct cache_object *o, uint64_t idx, uint16_t gen, int err)
{
	struct cache *c = o->cache;
	uint64_t len = chunk_len(o, idx);
	struct chunk *ch;

	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	if (!ch || ch->state != CH_PRESENT || ch->gen != gen || ch->flight ||
		flight_start(ch) < 0) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	lru_remove(c, ch);
	ch->state = CH_EVICTING;
	chunk_clear_sums(c, ch);
	c->st.used_bytes -= len;
	c->st.nr_chunks--;
	c->st.verify_failures++;
	o->cached_bytes -= len;
	cache_obj_ref_locked(o);
	ch->lru_next = NULL;
	pthread_mutex_unlock(&c->lock);
	if (err == -EBADMSG)
		log_warn("cache: chunk %" PRIu64 " of %s failed its checksum; dropped, fetching it "
			 "again",
			idx, o->path);
	else
		cache_disk_error(c, err, "reading", o->data_path);
	cache_evict_victims(c, ch);
}

/* Opens (or makes) the data file; a full volume gets one chunk's worth of least recently used
 * chunks evicted and one more try. No io_lock held (eviction takes others'). */
static int obj_open_data_roomy(struct cache_object *o)
{
	int rc = cache_obj_open_data(o);

	if ((rc == -ENOSPC || rc == -EDQUOT) && cache_make_room(o->cache, o->cache->chunk_bytes)) {
		rc = cache_obj_open_data(o);
		if (rc == 0)
			cache_disk_full_recovered(o->cache);
	}
	return rc;
}

/* ---- chunks ---- */

/* Copies [off, off + len) of the landed bytes of flight f (chunk at chunk_off) into dst, with
 * c->lock dropped: the fetcher's flight_unland waits for this copy before the buffer goes. */
static void flight_copy(struct cache *c, struct flight *f, uint64_t chunk_off, void *dst,
	uint64_t off, size_t len)
{
	const char *src = f->landed + (off - chunk_off);

	f->nr_copying++;
	pthread_mutex_unlock(&c->lock);
	memcpy(dst, src, len);
	pthread_mutex_lock(&c->lock);
	if (--f->nr_copying == 0)
		pthread_cond_broadcast(&f->cond);
}

/* cache_chunk_acquire and cache_chunk_acquire_copy: dst (when set) takes [off, off + len)
 * from landed bytes instead of waiting for them to reach the disk. */
/* c->lock held; ch present. */
static void pin(struct cache *c, struct chunk *ch)
{
	if (ch->pins++ == 0)
		lru_remove(c, ch);
}

static int acquire(struct cache_object *o, uint64_t idx, bool wait, void *dst, uint64_t off,
	size_t len)
{
	struct cache *c;
	struct chunk *ch;
	int rc;

	if (!o || idx >= o->nr_chunks)
		return -EINVAL;
	c = o->cache;
	if (dst && (off < idx << c->chunk_shift ||
			   off + len > (idx << c->chunk_shift) + chunk_len(o, idx)))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_get(o, idx);
	if (!ch) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		struct flight *f = ch->flight;

		if (ch->state == CH_PRESENT) {
			/* Checked block by block as it is read, not here: every read verifies. */
			pin(c, ch);
			c->st.hits++;
			rc = CACHE_HIT;
			goto out;
		}
		if (ch->state == CH_ABSENT) {
			rc = flight_start(ch);
			if (rc < 0)
				goto out;
			ch->state = CH_FETCHING;
			c->st.misses++;
			rc = CACHE_FETCH;
			goto out;
		}
		/* FETCHING or EVICTING */
		if (!wait) {
			rc = -EAGAIN;
			goto out;
		}
		f->refs++;
		while (!f->done && !(dst && f->landed))
			pthread_cond_wait(&f->cond, &c->lock);
		if (!f->done) {
			flight_copy(c, f, idx << c->chunk_shift, dst, off, len);
			cache_flight_unref(f);
			rc = CACHE_COPIED;
			goto out;
		}
		rc = f->result;
		cache_flight_unref(f);
		if (rc < 0)
			goto out;
	}
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_chunk_acquire(struct cache_object *o, uint64_t idx, bool wait)
{
	return acquire(o, idx, wait, NULL, 0, 0);
}

int cache_chunk_pin(struct cache_object *o, uint64_t idx)
{
	struct cache *c;
	struct chunk *ch;
	int rc = -ENOENT;

	if (!o || idx >= o->nr_chunks)
		return -EINVAL;
	c = o->cache;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	if (ch && ch->state == CH_PRESENT) {
		pin(c, ch);
		rc = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_chunk_acquire_copy(struct cache_object *o, uint64_t idx, void *dst, uint64_t off,
	size_t len)
{
	if (!dst)
		return -EINVAL;
	return acquire(o, idx, true, dst, off, len);
}

/* Publishes buf as the landed bytes of a FETCHING chunk's flight; c->lock held. */
static void land(struct flight *f, const void *buf)
{
	if (!f->landed) {
		f->landed = buf;
		pthread_cond_broadcast(&f->cond);
	}
}

int cache_chunk_land(struct cache_object *o, uint64_t idx, const void *buf, size_t len)
{
	struct cache *c;
	struct chunk *ch;
	int rc = -EINVAL;

	if (!o || !buf || idx >= o->nr_chunks || len != chunk_len(o, idx))
		return -EINVAL;
	c = o->cache;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	if (ch && ch->state == CH_FETCHING) {
		land(ch->flight, buf);
		rc = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Ends a fetch without bytes: the chunk is absent again and waiters get result. c->lock held
 * (dropped while copiers of the landed bytes finish). */
static void fetch_abort(struct cache *c, struct chunk *ch, int result)
{
	flight_unland(c, ch->flight);
	ch->state = CH_ABSENT;
	ch->flags = 0;
	flight_finish(ch, result);
}

/* Writes a chunk's bytes; a full volume gets them room from the least recently used chunks
 * and one more try. What a failed write left is punched out again. */
static ssize_t chunk_write(struct cache_object *o, const void *buf, size_t len, uint64_t off)
{
	struct cache *c = o->cache;
	ssize_t n = c->io->pwrite(o->data_fd, buf, len, off);

	if (n == -ENOSPC || n == -EDQUOT) {
		cache_punch(o->data_fd, off, len);
		if (cache_make_room(c, len)) {
			n = c->io->pwrite(o->data_fd, buf, len, off);
			if (n >= 0)
				cache_disk_full_recovered(c);
		}
	}
	if (n < 0)
		cache_punch(o->data_fd, off, len);
	return n;
}

int cache_chunk_fill(struct cache_object *o, uint64_t idx, const void *buf, size_t len)
{
	struct cache *c;
	struct chunk *ch, *victims;
	uint64_t one = 0, *many = NULL;
	ssize_t n;
	bool over;
	int rc;

	if (!o || !buf || idx >= o->nr_chunks || len != chunk_len(o, idx))
		return -EINVAL;
	c = o->cache;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	if (!ch || ch->state != CH_FETCHING) {
		pthread_mutex_unlock(&c->lock);
		return -EINVAL;
	}
	/* Waiters copy from buf while it is written (the fetcher's readahead may have landed
	 * it already). Degraded: no write is tried; the caller serves the bytes it holds. */
	land(ch->flight, buf);
	rc = c->st.degraded ? -EROFS : 0;
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		goto fail;
	if (c->blocks_per_chunk > 1) {
		many = malloc(blocks_of(len) * sizeof(*many));
		if (!many) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	block_sums_of(buf, len, many ? many : &one);
	/* An object opened while the volume was full has no files yet: try again. */
	rc = obj_open_data_roomy(o);
	if (rc < 0) {
		if (rc != -EROFS && rc != -ENOMEM)
			cache_disk_error(c, rc, "creating", o->data_path);
		goto fail;
	}

	/* Reserve the bytes, then make room: used_bytes counts fills in progress, so
	 * concurrent fills cannot all slip under the limit at once. */
	pthread_mutex_lock(&c->lock);
	c->st.used_bytes += len;
	victims = cache_pick_victims(c, 0);
	/* Only pinned chunks and other fills in progress remain: allow one chunk over. */
	over = c->max_bytes && c->st.used_bytes > c->max_bytes + c->chunk_bytes;
	if (over)
		c->st.used_bytes -= len;
	pthread_mutex_unlock(&c->lock);
	cache_evict_victims(c, victims);
	if (over) {
		rc = -ENOSPC;
		goto fail;
	}

	n = chunk_write(o, buf, len, idx << c->chunk_shift);
	if (n < 0) {
		pthread_mutex_lock(&c->lock);
		c->st.used_bytes -= len;
		pthread_mutex_unlock(&c->lock);
		rc = (int)n;
		cache_disk_error(c, rc, "writing", o->data_path);
		goto fail;
	}
	pthread_mutex_lock(&c->lock);
	flight_unland(c, ch->flight);
	ch->state = CH_PRESENT;
	ch->flags = 0; /* clears SYNCING: these bytes are not durable yet */
	if (many)
		ch->sums.many = many;
	else
		ch->sums.one = one;
	ch->pins++;
	ch->gen++;
	ch->stamp = ++c->clock;
	c->st.nr_chunks++;
	c->fail_run = 0;
	o->cached_bytes += len;
	cache_mark_dirty(c, ch);
	flight_finish(ch, 0);
	pthread_mutex_unlock(&c->lock);
	return 0;
fail:
	free(many);
	/* The chunk is absent again; waiters look again and one of them fetches. */
	pthread_mutex_lock(&c->lock);
	fetch_abort(c, ch, 0);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void cache_chunk_fail(struct cache_object *o, uint64_t idx, int err)
{
	struct cache *c;
	struct chunk *ch;

	if (!o || idx >= o->nr_chunks)
		return;
	c = o->cache;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	if (ch && ch->state == CH_FETCHING)
		fetch_abort(c, ch, err < 0 ? err : -EIO);
	pthread_mutex_unlock(&c->lock);
}

void cache_chunk_release(struct cache_object *o, uint64_t idx)
{
	struct cache *c;
	struct chunk *ch;

	if (!o || idx >= o->nr_chunks)
		return;
	c = o->cache;
	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	/* A chunk dropped under its holders keeps their pins until they release here. */
	if (ch && ch->pins > 0 && --ch->pins == 0 && ch->state == CH_PRESENT) {
		ch->stamp = ++c->clock;
		cache_lru_append(c, ch);
		cache_mark_dirty(c, ch);
	}
	pthread_mutex_unlock(&c->lock);
}

/* ---- reads, checked block by block ---- */

/* A block's worth per thread for reads that start or end inside a block; made once per
 * thread, freed at its exit. */
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void bounce_key_init(void)
{
	pthread_key_create(&bounce_key, free);
}

static unsigned char *bounce_get(void)
{
	unsigned char *b;

	pthread_once(&bounce_once, bounce_key_init);
	b = pthread_getspecific(bounce_key);
	if (!b) {
		b = malloc(CACHE_BLOCK_BYTES);
		if (b && pthread_setspecific(bounce_key, b) != 0) {
			free(b);
			b = NULL;
		}
	}
	return b;
}

/* Reads [pos, want_end) into dst, reading and checking the whole blocks of [gstart, gend)
 * that cover it (gstart block-aligned, gend a block boundary or the object's end; sums: of
 * those blocks). Runs of whole blocks go straight into dst and are zeroed there when they
 * do not verify; edges go through the thread's bounce block. 0, -EBADMSG (a block did not
 * verify, or the file was short), -ENOMEM, or the read's -errno. */
static int read_checked(struct cache *c, int fd, unsigned char *dst, uint64_t pos,
	uint64_t want_end, uint64_t gstart, uint64_t gend, const uint64_t *sums)
{
	uint64_t cur = gstart;

	while (cur < want_end) {
		uint64_t bend = min_u64(cur + CACHE_BLOCK_BYTES, gend), a, b;
		const uint64_t *want = sums + ((cur - gstart) >> BLOCK_SHIFT);
		unsigned char *bounce;
		ssize_t n;

		if (cur >= pos && bend <= want_end) {
			uint64_t run_end = bend, k = 0;
			unsigned char *d = dst + (cur - pos);

			while (run_end < want_end &&
				min_u64(run_end + CACHE_BLOCK_BYTES, gend) <= want_end)
				run_end = min_u64(run_end + CACHE_BLOCK_BYTES, gend);
			n = c->io->pread(fd, d, run_end - cur, cur);
			if (n != (ssize_t)(run_end - cur)) {
				memset(d, 0, run_end - cur);
				return n < 0 ? (int)n : -EBADMSG;
			}
			for (uint64_t p = cur; p < run_end; p += CACHE_BLOCK_BYTES, k++) {
				uint64_t l = min_u64(CACHE_BLOCK_BYTES, run_end - p);

				if (block_hash(d + (p - cur), l) != want[k]) {
					memset(d, 0, run_end - cur);
					return -EBADMSG;
				}
			}
			cur = run_end;
			continue;
		}
		bounce = bounce_get();
		if (!bounce)
			return -ENOMEM;
		n = c->io->pread(fd, bounce, bend - cur, cur);
		if (n != (ssize_t)(bend - cur))
			return n < 0 ? (int)n : -EBADMSG;
		if (block_hash(bounce, bend - cur) != *want)
			return -EBADMSG;
		a = cur > pos ? cur : pos;
		b = bend < want_end ? bend : want_end;
		memcpy(dst + (a - pos), bounce + (a - cur), b - a);
		cur = bend;
	}
	return 0;
}

ssize_t cache_object_read(struct cache_object *o, void *buf, size_t len, uint64_t off)
{
	struct cache *c;
	uint64_t end, pos;

	if (!o || (!buf && len))
		return -EINVAL;
	if (off >= o->size)
		return 0;
	if (len > o->size - off)
		len = (size_t)(o->size - off);
	c = o->cache;
	end = off + len;
	/* One group of at most READ_GROUP_BLOCKS blocks of one chunk at a time: its sums are
	 * copied under the lock (a chunk dropped meanwhile frees its own), then read and
	 * checked without it. Tried and dropped: posix_fadvise(WILLNEED) of the rest of a
	 * chunk at its first read after a restart (format 1's check read whole chunks, a
	 * readahead of sorts): 128 KiB reads of a cold 1 GiB object fell from ~1.9 to ~0.7
	 * GB/s, the advice blocking the reader while it queued 8 MiB. */
	for (pos = off; pos < end;) {
		uint64_t idx = pos >> c->chunk_shift, cstart = idx << c->chunk_shift;
		uint64_t cend = min_u64(cstart + c->chunk_bytes, o->size);
		uint64_t gstart = pos & ~(uint64_t)(CACHE_BLOCK_BYTES - 1);
		uint64_t gend =
			min_u64(gstart + (uint64_t)READ_GROUP_BLOCKS * CACHE_BLOCK_BYTES, cend);
		uint64_t want_end = min_u64(end, gend);
		uint64_t sums[READ_GROUP_BLOCKS];
		struct chunk *ch;
		uint16_t gen;
		int rc;

		pthread_mutex_lock(&c->lock);
		ch = cache_chunk_find(o, idx);
		if (!ch || ch->state != CH_PRESENT) {
			pthread_mutex_unlock(&c->lock);
			return -EBADMSG;
		}
		memcpy(sums, chunk_sums(c, ch) + ((gstart - cstart) >> BLOCK_SHIFT),
			blocks_of(gend - gstart) * sizeof(*sums));
		gen = ch->gen;
		pthread_mutex_unlock(&c->lock);
		rc = read_checked(c, o->data_fd, (unsigned char *)buf + (pos - off), pos, want_end,
			gstart, gend, sums);
		if (rc == -ENOMEM)
			return rc;
		if (rc < 0) {
			chunk_drop(o, idx, gen, rc);
			return -EBADMSG;
		}
		pos = want_end;
	}
	return (ssize_t)len;
}

void cache_object_readahead(struct cache_object *o, uint64_t idx)
{
	struct cache *c = o->cache;
	struct chunk *ch;
	uint64_t off, len;
	bool present;
	int fd;

	pthread_mutex_lock(&c->lock);
	ch = cache_chunk_find(o, idx);
	present = ch && ch->state == CH_PRESENT;
	fd = o->data_fd; /* lives as long as the caller's reference */
	pthread_mutex_unlock(&c->lock);
	if (!present || fd < 0)
		return;
	off = idx << c->chunk_shift;
	len = min_u64(c->chunk_bytes, o->size - off);
	/* A hint: an error (none expected on a regular file) changes nothing a reader sees. */
	(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

int cache_object_block_sums(struct cache_object *o, uint64_t off, uint64_t len, uint64_t *sums,
	size_t max_sums)
{
	struct cache *c;
	uint64_t nr, k = 0;
	int rc = 0;

	if (!o || (!sums && max_sums) || (off & (CACHE_BLOCK_BYTES - 1)))
		return -EINVAL;
	if (off >= o->size || !len)
		return 0;
	if (len > o->size - off)
		len = o->size - off;
	c = o->cache;
	nr = min_u64(blocks_of(len), min_u64(max_sums, INT_MAX));
	pthread_mutex_lock(&c->lock);
	while (k < nr) {
		uint64_t pos = off + (k << BLOCK_SHIFT), idx = pos >> c->chunk_shift;
		uint64_t cstart = idx << c->chunk_shift, j = (pos - cstart) >> BLOCK_SHIFT, n;
		struct chunk *ch = cache_chunk_find(o, idx);

		if (!ch || ch->state != CH_PRESENT) {
			rc = -EINVAL;
			break;
		}
		n = min_u64(blocks_of(chunk_len(o, idx)) - j, nr - k);
		memcpy(sums + k, chunk_sums(c, ch) + j, n * sizeof(*sums));
		k += n;
	}
	pthread_mutex_unlock(&c->lock);
	return rc < 0 ? rc : (int)nr;
}

/* ---- objects: public ---- */

/* Gives o the remote identity obj, when it has none yet; c->lock held. etag_copy: a copy of
 * obj->etag, made beforehand (no allocation under the lock) when it is not the version; o
 * takes it when it needs it (*etag_copy becomes NULL). */
static void obj_set_remote(struct cache_object *o, const struct remote_object *obj,
	char **etag_copy)
{
	if (o->have_remote)
		return;
	o->have_remote = true;
	o->remote.path = o->path;
	o->remote.size = o->size;
	o->remote.mtime = obj->mtime;
	/* "*" or a weak tag names no version: it pins no fetch, so it is not kept. */
	if (!remote_etag_is_version(obj->etag))
		return;
	if (!strcmp(obj->etag, o->version)) {
		o->remote.etag = o->version;
		return;
	}
	o->etag_copy = *etag_copy;
	*etag_copy = NULL;
	o->remote.etag = o->etag_copy;
}

int cache_object_open(struct cache *c, const struct remote_object *obj, const char *version,
	struct cache_object **out)
{
	struct cache_object *o, *fresh = NULL, **slot;
	const char *path;
	uint64_t key_hash, size;
	char *etag_copy = NULL;
	int rc;

	*out = NULL;
	if (!c || !obj || !obj->path || !version)
		return -EINVAL;
	path = obj->path;
	size = obj->size;
	if (strlen(path) > MAX_PATH_BYTES || strlen(version) > MAX_VERSION_BYTES)
		return -ENAMETOOLONG;
	if (size > MAX_OBJECT_BYTES)
		return -EFBIG;
	if (remote_etag_is_version(obj->etag) && strcmp(obj->etag, version) != 0) {
		etag_copy = strdup(obj->etag);
		if (!etag_copy)
			return -ENOMEM;
	}
	key_hash = cache_key_hash_of(path, version, size);
	pthread_mutex_lock(&c->lock);
	for (;;) {
		slot = cache_table_slot(c, path);
		o = *slot;
		if (o && (o->size != size || strcmp(o->version, version) != 0)) {
			/* A new version: the old one leaves the table now, and its chunks and
			 * files go as soon as nobody reads it (right here when nobody does). */
			cache_table_remove(c, o);
			o->stale = true;
			o->stale_next = c->stale;
			c->stale = o;
			dirty_remove(c, o);
			cache_obj_ref_locked(o);
			pthread_mutex_unlock(&c->lock);
			cache_obj_put(o);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (o)
			break;
		/* A stale object with this very key still being read comes back to life rather
		 * than sharing file names with a new one; one being deleted is waited for. */
		o = stale_find(c, path, version, size, key_hash);
		if (o && o->dead) {
			pthread_cond_wait(&c->dead_cond, &c->lock);
			continue;
		}
		if (o) {
			stale_remove(c, o);
			o->stale = false;
			cache_table_insert(c, o);
			break;
		}
		if (fresh) {
			o = fresh;
			fresh = NULL;
			cache_table_insert(c, o);
			cache_all_insert(c, o);
			break;
		}
		pthread_mutex_unlock(&c->lock);
		fresh = cache_obj_new(c, path, version, size, key_hash);
		if (!fresh) {
			free(etag_copy);
			return -ENOMEM;
		}
		pthread_mutex_lock(&c->lock);
	}
	obj_set_remote(o, obj, &etag_copy);
	cache_obj_ref_locked(o);
	pthread_mutex_unlock(&c->lock);
	free(etag_copy);
	cache_obj_destroy(fresh); /* lost a race to another opener */
	/* A full or failing volume does not fail the open: the object has no files, its chunks
	 * are fetched and not stored, and a later fill tries to make the files again. */
	rc = obj_open_data_roomy(o);
	if (rc == -ENOMEM) {
		cache_obj_put(o);
		return rc;
	}
	if (rc < 0 && rc != -EROFS)
		cache_disk_error(c, rc, "creating", o->data_path);
	*out = o;
	return 0;
}

struct cache_object *cache_object_ref(struct cache_object *o)
{
	if (!o)
		return NULL;
	pthread_mutex_lock(&o->cache->lock);
	cache_obj_ref_locked(o);
	pthread_mutex_unlock(&o->cache->lock);
	return o;
}

void cache_object_unref(struct cache_object *o)
{
	if (o)
		cache_obj_put(o);
}

uint64_t cache_object_size(const struct cache_object *o)
{
	return o->size;
}

uint64_t cache_object_nr_chunks(const struct cache_object *o)
{
	return o->nr_chunks;
}

uint64_t cache_object_cached_bytes(struct cache_object *o)
{
	uint64_t n;

	pthread_mutex_lock(&o->cache->lock);
	n = o->cached_bytes;
	pthread_mutex_unlock(&o->cache->lock);
	return n;
}

const struct remote_object *cache_object_remote(const struct cache_object *o)
{
	return &o->remote;
}

const char *cache_object_data_path(const struct cache_object *o)
{
	return o->data_path;
}

uint32_t cache_chunk_bytes(const struct cache *c)
{
	return c->chunk_bytes;
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
}
