/* The chunk cache on local disk (see cache.h): chunk states, single flight, LRU eviction
 * and persistence. Sits between the fetch engine (which fills chunks) and the FUSE reads. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/cache.h"
#include "fs/io.h"
#include "fs/log.h"

/*
 * On-disk format (format 1)
 * =========================
 * Under the cache directory D (one per source):
 *
 *   D/meta                 text, two lines: "ferry-cache 1" and "chunk_bytes N". Written once
 *                          when the cache is made (temporary file, fsync, rename). A cache
 *                          with another chunk size is refused, not converted. The running
 *                          process holds flock(LOCK_EX) on it: one process per cache.
 *   D/XX/H.data            the object version's bytes, sparse: byte k of the object is byte
 *                          k of the file; chunks never fetched or evicted are holes. The file
 *                          is as long as the object.
 *   D/XX/H.map             which chunks of H.data are present, see below.
 *
 * H is the 16-hex-digit XXH3-64 of the key: path, a NUL, version (ETag or mtime text), a
 * NUL, object size (8 bytes, little-endian); XX is its first two digits (256 folders).
 *
 * H.map: a 64-byte header, the path and version bytes, zero padding up to records_off (a
 * multiple of 512), then one 32-byte record per chunk, so no record straddles a sector.
 *   header: magic "FERRYMAP", u32 format (1), u32 chunk_bytes, u64 object_size,
 *           u64 nr_chunks, u64 key hash (= H), u32 path_bytes, u32 version_bytes,
 *           u32 records_off, u32 zero, u64 XXH3-64 of the first 56 header bytes followed
 *           by the path and version bytes.
 *   record: u64 XXH3-64 of the chunk's bytes, u64 last-use stamp (a cache-wide logical
 *           clock), u32 flags (bit 0: present), u32 chunk length, u64 XXH3-64 of the
 *           first 24 record bytes seeded with (index XOR H): a torn or misplaced record
 *           reads as absent. An all-zero record is absent (a new map is a sparse file).
 * All integers are in host byte order (the cache is local to the machine).
 *
 * Write order: chunk bytes go to H.data first; cache_sync() fdatasyncs H.data and only
 * then writes the present records and fdatasyncs H.map, so a record says present only when
 * the bytes under it are durable. Eviction writes the absent record first, then punches
 * the hole. A crash can still leave a present record over bytes that later changed or were
 * punched (an eviction whose record write was not yet durable): every chunk is checked
 * against its record's checksum on its first use after a restart, and a mismatch makes it
 * absent. Bytes in H.data under absent records (fills never synced) are punched out when
 * the cache is opened, so disk use matches the maps.
 */

#define META_NAME	  "meta"
#define META_MAGIC	  "ferry-cache 1"
#define MAP_MAGIC	  "FERRYMAP"
#define MAP_FORMAT	  1
#define MAP_HEADER_BYTES  64
#define MAP_RECORD_BYTES  32
#define MAP_ALIGN	  512
#define REC_PRESENT	  1u
#define MAX_PATH_BYTES	  16384
#define MAX_VERSION_BYTES 1024

struct map_header {
	char magic[8];
	uint32_t format;
	uint32_t chunk_bytes;
	uint64_t object_size;
	uint64_t nr_chunks;
	uint64_t key_hash;
	uint32_t path_bytes;
	uint32_t version_bytes;
	uint32_t records_off;
	uint32_t zero;
	uint64_t header_sum;
};
_Static_assert(sizeof(struct map_header) == MAP_HEADER_BYTES, "map header layout");

struct map_record {
	uint64_t sum;
	uint64_t stamp;
	uint32_t flags;
	uint32_t len;
	uint64_t check;
};
_Static_assert(sizeof(struct map_record) == MAP_RECORD_BYTES, "map record layout");

/*
 * Locking
 * =======
 * c->lock (one mutex for the whole cache) protects every chunk's state, flags, pins, stamp,
 * LRU links and flight; object reference counts; the object tables and lists; the
 * counters. Its critical sections are a few pointer operations: no disk I/O, no allocation
 * on the hit path (acquire, read, release of a present chunk: lock, pin, unlock; the read
 * itself runs unlocked on a descriptor that lives as long as the caller's reference).
 * At ~1.5 GB/s of 1 MiB reads that is ~3,000 lock round trips a second: far from contended.
 *
 * o->io_lock (one per object) serialises what changes an object's files other than chunk
 * data writes: creating and opening/closing its descriptors, writing its map records
 * (cache_sync, eviction), punching holes. Lock order: o->io_lock, then c->lock; c->lock is
 * never held while waiting for an io_lock. Chunk data writes need no lock: a chunk being
 * filled is FETCHING, which keeps everyone else off its byte range.
 *
 * Waiting: a chunk that is FETCHING, being verified or EVICTING has a struct flight; other
 * acquirers sleep on the flight's condition variable (with c->lock) until it completes.
 */

enum chunk_state {
	CH_ABSENT,   /* no bytes; the first acquirer becomes the fetcher */
	CH_FETCHING, /* one fetcher owns it until fill or fail; flight set */
	CH_PRESENT,  /* bytes in the data file; evictable when pins == 0 and no flight */
	CH_EVICTING, /* chosen as a victim; record cleared and hole punched outside the lock */
};

enum chunk_flags {
	CH_VERIFIED = 1 << 0,  /* checksum checked since this process loaded it (or filled it) */
	CH_VERIFYING = 1 << 1, /* PRESENT, a thread is checking it; flight set */
	CH_DURABLE = 1 << 2,   /* its bytes have been fdatasync'd: a record may say present */
	CH_SYNCING = 1 << 3,   /* in the current cache_sync's fdatasync */
	CH_IN_LRU = 1 << 4,
};

/* One in-progress fetch, verification or eviction of a chunk. refs counts the chunk's
 * pointer (until completion) and each waiter; the last one frees it. All fields are
 * protected by c->lock. result: 0 tells waiters to look at the chunk again, < 0 is the
 * fetcher's error which they return. */
struct flight {
	pthread_cond_t cond;
	unsigned refs;
	bool done;
	int result;
};

/* One chunk of one object version. All fields protected by c->lock. Invariants: in the LRU
 * list iff PRESENT, pins == 0, !flight; pins > 0 only when PRESENT; flight != NULL iff
 * FETCHING, EVICTING or VERIFYING. */
struct chunk {
	struct chunk *lru_prev, *lru_next; /* c->lru; lru_next also chains a victim list */
	struct cache_object *obj;
	struct flight *flight;
	uint64_t sum;	/* XXH3-64 of its bytes, when PRESENT */
	uint64_t stamp; /* last use, c->clock */
	uint32_t pins;
	uint8_t state;
	uint8_t flags;
};

/* One object version. The identity fields and names are immutable after creation. refs
 * counts callers' references and the cache's own short ones (eviction, sync); descriptors
 * are open while refs > 0 (opened lazily under io_lock). A stale object (a newer version
 * of its path was opened) is off the path table; it is deleted, files and all, when its
 * last reference goes. */
struct cache_object {
	struct cache *cache;
	char *path, *version;
	uint64_t size, nr_chunks, key_hash;
	char *data_path, *map_path;
	uint32_t records_off;

	/* protected by c->lock */
	unsigned refs;
	bool stale, dead;
	struct cache_object *hash_next;		  /* c->table bucket, keyed by path */
	struct cache_object *all_prev, *all_next; /* c->all, every object until freed */
	struct cache_object *stale_next;	  /* c->stale, while stale */
	struct cache_object *dirty_next;	  /* c->dirty, when on_dirty */
	bool on_dirty;
	uint64_t dirty_lo, dirty_hi; /* records to rewrite: [lo, hi) */
	uint64_t cached_bytes;
	struct chunk *chunks; /* nr_chunks */

	/* protected by io_lock; data_fd is read without it by holders of a reference */
	pthread_mutex_t io_lock;
	int data_fd, map_fd;
	bool files_exist, dir_synced;
};

/* Counters and lists protected by lock; everything else immutable after cache_open. */
struct cache {
	char *dir;
	const struct io_backend *io;
	uint32_t chunk_bytes, chunk_shift;
	uint64_t max_bytes;
	int meta_fd; /* holds the flock */

	pthread_mutex_t lock;
	struct cache_object **table; /* current objects by path hash; nr_buckets a power of 2 */
	size_t nr_buckets, nr_in_table;
	struct cache_object *all;   /* every object, current, stale or being deleted */
	struct cache_object *stale; /* stale objects: still read, or being deleted */
	struct cache_object *dirty; /* objects with records to write */
	struct chunk lru;	    /* list head: lru.lru_next is the least recently used */
	uint64_t clock;
	struct cache_stats st; /* used_bytes also counts fills in progress */
};

/* ---- small helpers ---- */

static int errf(char *errbuf, size_t errlen, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int errf(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errlen) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static uint64_t chunk_len(const struct cache_object *o, uint64_t idx)
{
	uint64_t cb = o->cache->chunk_bytes, off = idx * cb;

	return o->size - off < cb ? o->size - off : cb;
}

static uint64_t chunk_idx(const struct chunk *ch)
{
	return (uint64_t)(ch - ch->obj->chunks);
}

static uint64_t record_check(const struct map_record *r, uint64_t idx, uint64_t key_hash)
{
	return XXH3_64bits_withSeed(r, offsetof(struct map_record, check), idx ^ key_hash);
}

static uint64_t key_hash_of(const char *path, const char *version, uint64_t size)
{
	XXH3_state_t *s = XXH3_createState();
	uint64_t h;

	if (!s)
		return 0;
	XXH3_64bits_reset(s);
	XXH3_64bits_update(s, path, strlen(path) + 1);
	XXH3_64bits_update(s, version, strlen(version) + 1);
	XXH3_64bits_update(s, &size, sizeof(size));
	h = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return h;
}

static uint64_t header_sum_of(const struct map_header *h, const char *path, const char *ver)
{
	XXH3_state_t *s = XXH3_createState();
	uint64_t sum;

	if (!s)
		return 0;
	XXH3_64bits_reset(s);
	XXH3_64bits_update(s, h, offsetof(struct map_header, header_sum));
	XXH3_64bits_update(s, path, h->path_bytes);
	XXH3_64bits_update(s, ver, h->version_bytes);
	sum = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return sum;
}

static uint64_t path_hash_of(const char *path)
{
	return XXH3_64bits(path, strlen(path));
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
	ch->flags &= ~CH_IN_LRU;
}

static void lru_append(struct cache *c, struct chunk *ch)
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

static void flight_unref(struct flight *f)
{
	if (--f->refs == 0) {
		pthread_cond_destroy(&f->cond);
		free(f);
	}
}

static void flight_finish(struct chunk *ch, int result)
{
	struct flight *f = ch->flight;

	ch->flight = NULL;
	f->done = true;
	f->result = result;
	pthread_cond_broadcast(&f->cond);
	flight_unref(f);
}

static void mark_dirty(struct cache *c, struct cache_object *o, uint64_t idx)
{
	if (o->dirty_lo >= o->dirty_hi) {
		o->dirty_lo = idx;
		o->dirty_hi = idx + 1;
	} else {
		if (idx < o->dirty_lo)
			o->dirty_lo = idx;
		if (idx + 1 > o->dirty_hi)
			o->dirty_hi = idx + 1;
	}
	if (!o->on_dirty && !o->stale) {
		o->on_dirty = true;
		o->dirty_next = c->dirty;
		c->dirty = o;
	}
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

static struct cache_object **table_slot(struct cache *c, const char *path)
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

static void table_insert(struct cache *c, struct cache_object *o)
{
	struct cache_object **pp;

	if (c->nr_in_table >= c->nr_buckets)
		table_grow(c);
	pp = table_slot(c, o->path);
	o->hash_next = NULL;
	*pp = o;
	c->nr_in_table++;
}

static void table_remove(struct cache *c, struct cache_object *o)
{
	struct cache_object **pp = table_slot(c, o->path);

	if (*pp == o) {
		*pp = o->hash_next;
		o->hash_next = NULL;
		c->nr_in_table--;
	}
}

static void all_insert(struct cache *c, struct cache_object *o)
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
	for (uint64_t i = 0; i < o->nr_chunks; i++) {
		struct chunk *ch = &o->chunks[i];

		if (ch->state == CH_PRESENT) {
			lru_remove(c, ch);
			c->st.used_bytes -= chunk_len(o, i);
			c->st.nr_chunks--;
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

/* ---- objects: creation, descriptors, deletion ---- */

static void obj_destroy(struct cache_object *o)
{
	if (!o)
		return;
	if (o->data_fd >= 0)
		close(o->data_fd);
	if (o->map_fd >= 0)
		close(o->map_fd);
	pthread_mutex_destroy(&o->io_lock);
	free(o->chunks);
	free(o->path);
	free(o->version);
	free(o->data_path);
	free(o->map_path);
	free(o);
}

static struct cache_object *obj_new(
	struct cache *c, const char *path, const char *version, uint64_t size, uint64_t key_hash)
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
	o->path = strdup(path);
	o->version = strdup(version);
	o->chunks = calloc(o->nr_chunks ? o->nr_chunks : 1, sizeof(*o->chunks));
	if (asprintf(&o->data_path, "%s/%02x/%016" PRIx64 ".data", c->dir,
		    (unsigned)(key_hash >> 56), key_hash) < 0)
		o->data_path = NULL;
	if (asprintf(&o->map_path, "%s/%02x/%016" PRIx64 ".map", c->dir, (unsigned)(key_hash >> 56),
		    key_hash) < 0)
		o->map_path = NULL;
	if (!o->path || !o->version || !o->chunks || !o->data_path || !o->map_path) {
		obj_destroy(o);
		return NULL;
	}
	for (uint64_t i = 0; i < o->nr_chunks; i++)
		o->chunks[i].obj = o;
	return o;
}

/* Creates a new object's files: an empty sparse data file as long as the object and a map
 * with a header and all records absent. Under o->io_lock. */
static int obj_create_files(struct cache_object *o)
{
	struct cache *c = o->cache;
	struct map_header h = {.format = MAP_FORMAT};
	size_t pl = strlen(o->path), vl = strlen(o->version);
	char *buf = NULL, dir[PATH_MAX];
	ssize_t n;
	int rc;

	snprintf(dir, sizeof(dir), "%s/%02x", c->dir, (unsigned)(o->key_hash >> 56));
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	o->data_fd = open(o->data_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->data_fd < 0)
		return -errno;
	if (ftruncate(o->data_fd, (off_t)o->size) < 0)
		return -errno;
	o->map_fd = open(o->map_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->map_fd < 0)
		return -errno;
	memcpy(h.magic, MAP_MAGIC, sizeof(h.magic));
	h.chunk_bytes = c->chunk_bytes;
	h.object_size = o->size;
	h.nr_chunks = o->nr_chunks;
	h.key_hash = o->key_hash;
	h.path_bytes = (uint32_t)pl;
	h.version_bytes = (uint32_t)vl;
	h.records_off = o->records_off;
	h.header_sum = header_sum_of(&h, o->path, o->version);
	buf = calloc(1, o->records_off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), o->path, pl);
	memcpy(buf + sizeof(h) + pl, o->version, vl);
	n = c->io->pwrite(o->map_fd, buf, o->records_off, 0);
	free(buf);
	if (n < 0)
		return (int)n;
	rc = ftruncate(
		o->map_fd, (off_t)(o->records_off + o->nr_chunks * (uint64_t)MAP_RECORD_BYTES));
	if (rc < 0)
		return -errno;
	o->files_exist = true;
	return 0;
}

/* Makes sure the descriptors are open (creating the files for a new object). The caller
 * holds a reference. */
static int obj_open_fds(struct cache_object *o)
{
	int rc = 0;

	pthread_mutex_lock(&o->io_lock);
	if (o->data_fd >= 0 && o->map_fd >= 0)
		goto out;
	if (!o->files_exist) {
		rc = obj_create_files(o);
		if (rc < 0)
			goto close;
		goto out;
	}
	o->data_fd = open(o->data_path, O_RDWR | O_CLOEXEC);
	if (o->data_fd < 0) {
		rc = -errno;
		goto close;
	}
	o->map_fd = open(o->map_path, O_RDWR | O_CLOEXEC);
	if (o->map_fd < 0) {
		rc = -errno;
		goto close;
	}
	goto out;
close:
	if (o->data_fd >= 0)
		close(o->data_fd);
	if (o->map_fd >= 0)
		close(o->map_fd);
	o->data_fd = o->map_fd = -1;
out:
	pthread_mutex_unlock(&o->io_lock);
	return rc;
}

static void obj_ref_locked(struct cache_object *o)
{
	o->refs++;
}

/* Drops a reference (c->lock not held). The last one closes the descriptors, and deletes
 * a stale object with its files. */
static void obj_put(struct cache_object *o)
{
	struct cache *c = o->cache;
	bool last, dead = false;

	pthread_mutex_lock(&c->lock);
	last = --o->refs == 0;
	if (last && o->stale) {
		obj_detach(c, o);
		dead = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	pthread_mutex_lock(&o->io_lock);
	pthread_mutex_lock(&c->lock);
	last = o->refs == 0; /* someone may have taken a new reference meanwhile */
	pthread_mutex_unlock(&c->lock);
	if (last) {
		if (o->data_fd >= 0)
			close(o->data_fd);
		if (o->map_fd >= 0)
			close(o->map_fd);
		o->data_fd = o->map_fd = -1;
	}
	if (dead && o->files_exist) {
		/* The map first: a data file without a map is an orphan the next open removes. */
		if (unlink(o->map_path) < 0 && errno != ENOENT)
			log_warn("cache: cannot remove %s: %s", o->map_path, strerror(errno));
		if (unlink(o->data_path) < 0 && errno != ENOENT)
			log_warn("cache: cannot remove %s: %s", o->data_path, strerror(errno));
	}
	pthread_mutex_unlock(&o->io_lock);
	if (dead) {
		/* Only now may a new object with the same file names be made. */
		pthread_mutex_lock(&c->lock);
		stale_remove(c, o);
		all_remove(c, o);
		pthread_mutex_unlock(&c->lock);
		obj_destroy(o);
	}
}

/* ---- eviction ---- */

/* Chooses least-recently used unpinned chunks until used_bytes <= max_bytes, or the list
 * is empty. Each victim becomes EVICTING with a flight, stops counting, and its object
 * gets a reference; the caller runs evict_victims() after dropping c->lock. */
static struct chunk *pick_victims(struct cache *c)
{
	struct chunk *victims = NULL;

	if (!c->max_bytes)
		return NULL;
	while (c->st.used_bytes > c->max_bytes && c->lru.lru_next != &c->lru) {
		struct chunk *ch = c->lru.lru_next;
		struct cache_object *o = ch->obj;
		uint64_t len = chunk_len(o, chunk_idx(ch));

		if (flight_start(ch) < 0)
			break;
		lru_remove(c, ch);
		ch->state = CH_EVICTING;
		c->st.used_bytes -= len;
		c->st.nr_chunks--;
		c->st.evictions++;
		o->cached_bytes -= len;
		obj_ref_locked(o);
		ch->lru_next = victims;
		victims = ch;
	}
	return victims;
}

/* Clears each victim's map record, then punches its bytes out of the data file. */
static void evict_victims(struct cache *c, struct chunk *victims)
{
	while (victims) {
		struct chunk *ch = victims;
		struct cache_object *o = ch->obj;
		uint64_t idx = chunk_idx(ch), len = chunk_len(o, idx);
		struct map_record zero = {0};
		ssize_t n;

		victims = ch->lru_next;
		ch->lru_next = NULL;
		if (obj_open_fds(o) == 0) {
			pthread_mutex_lock(&o->io_lock);
			n = c->io->pwrite(o->map_fd, &zero, sizeof(zero),
				o->records_off + idx * MAP_RECORD_BYTES);
			if (n < 0)
				log_warn("cache: clearing record %" PRIu64 " of %s: %s", idx,
					o->map_path, strerror((int)-n));
			if (fallocate(o->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    (off_t)(idx << c->chunk_shift), (off_t)len) < 0)
				log_warn("cache: punching chunk %" PRIu64 " of %s: %s", idx,
					o->data_path, strerror(errno));
			pthread_mutex_unlock(&o->io_lock);
		} else {
			log_warn("cache: cannot open %s to evict from it", o->data_path);
		}
		pthread_mutex_lock(&c->lock);
		ch->state = CH_ABSENT;
		ch->flags = 0;
		flight_finish(ch, 0);
		pthread_mutex_unlock(&c->lock);
		obj_put(o);
	}
}

/* ---- chunks ---- */

/* Reads a chunk loaded from an earlier run and compares it with its record's checksum. */
static bool chunk_verify(struct cache_object *o, uint64_t idx, uint64_t sum)
{
	uint64_t len = chunk_len(o, idx);
	void *buf = malloc(len ? len : 1);
	ssize_t n;
	bool ok;

	if (!buf)
		return false;
	n = o->cache->io->pread(o->data_fd, buf, len, idx << o->cache->chunk_shift);
	ok = n == (ssize_t)len && XXH3_64bits(buf, len) == sum;
	free(buf);
	return ok;
}

int cache_chunk_acquire(struct cache_object *o, uint64_t idx, bool wait)
{
	struct cache *c;
	struct chunk *ch;
	uint64_t sum;
	int rc;

	if (!o || idx >= o->nr_chunks)
		return -EINVAL;
	c = o->cache;
	ch = &o->chunks[idx];
	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct flight *f = ch->flight;

		if (ch->state == CH_PRESENT && !f) {
			if (ch->flags & CH_VERIFIED) {
				if (ch->pins++ == 0)
					lru_remove(c, ch);
				c->st.hits++;
				rc = CACHE_HIT;
				goto out;
			}
			break; /* loaded from an earlier run: verify it below */
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
		/* FETCHING, EVICTING, or being verified */
		if (!wait) {
			rc = -EAGAIN;
			goto out;
		}
		f->refs++;
		while (!f->done)
			pthread_cond_wait(&f->cond, &c->lock);
		rc = f->result;
		flight_unref(f);
		if (rc < 0)
			goto out;
	}

	/* Verification: the chunk leaves the LRU so it is not evicted under us; others wait. */
	rc = flight_start(ch);
	if (rc < 0)
		goto out;
	lru_remove(c, ch);
	ch->flags |= CH_VERIFYING;
	sum = ch->sum;
	pthread_mutex_unlock(&c->lock);
	bool ok = chunk_verify(o, idx, sum);
	pthread_mutex_lock(&c->lock);
	ch->flags &= ~CH_VERIFYING;
	if (ok) {
		ch->flags |= CH_VERIFIED;
		ch->pins++;
		c->st.hits++;
		flight_finish(ch, 0);
		rc = CACHE_HIT;
		goto out;
	}
	/* Bad bytes: the chunk is absent and this caller fetches it; the flight goes on, so
	 * waiters keep waiting for the fetch. */
	log_warn("cache: chunk %" PRIu64 " of %s failed its checksum; fetching it again", idx,
		o->path);
	c->st.verify_failures++;
	c->st.misses++;
	c->st.used_bytes -= chunk_len(o, idx);
	c->st.nr_chunks--;
	o->cached_bytes -= chunk_len(o, idx);
	ch->state = CH_FETCHING;
	ch->flags = 0;
	mark_dirty(c, o, idx);
	rc = CACHE_FETCH;
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Ends a fetch without bytes: the chunk is absent again and waiters get result. */
static void fetch_abort(struct cache *c, struct chunk *ch, int result)
{
	ch->state = CH_ABSENT;
	ch->flags = 0;
	flight_finish(ch, result);
}

int cache_chunk_fill(struct cache_object *o, uint64_t idx, const void *buf, size_t len)
{
	struct cache *c;
	struct chunk *ch, *victims;
	uint64_t sum;
	ssize_t n;
	bool over;

	if (!o || idx >= o->nr_chunks || len != chunk_len(o, idx))
		return -EINVAL;
	c = o->cache;
	ch = &o->chunks[idx];
	sum = XXH3_64bits(buf, len);

	/* Reserve the bytes, then make room: used_bytes counts fills in progress, so
	 * concurrent fills cannot all slip under the limit at once. */
	pthread_mutex_lock(&c->lock);
	if (ch->state != CH_FETCHING || (ch->flags & CH_VERIFYING)) {
		pthread_mutex_unlock(&c->lock);
		return -EINVAL;
	}
	c->st.used_bytes += len;
	victims = pick_victims(c);
	/* Only pinned chunks and other fills in progress remain: allow one chunk over. */
	over = c->max_bytes && c->st.used_bytes > c->max_bytes + c->chunk_bytes;
	if (over)
		c->st.used_bytes -= len;
	pthread_mutex_unlock(&c->lock);
	evict_victims(c, victims);
	if (over) {
		n = -ENOSPC;
		goto fail;
	}

	n = c->io->pwrite(o->data_fd, buf, len, idx << c->chunk_shift);
	if (n < 0) {
		pthread_mutex_lock(&c->lock);
		c->st.used_bytes -= len;
		pthread_mutex_unlock(&c->lock);
		goto fail;
	}
	pthread_mutex_lock(&c->lock);
	ch->state = CH_PRESENT;
	ch->flags = CH_VERIFIED;
	ch->sum = sum;
	ch->pins = 1;
	ch->stamp = ++c->clock;
	c->st.nr_chunks++;
	o->cached_bytes += len;
	mark_dirty(c, o, idx);
	flight_finish(ch, 0);
	pthread_mutex_unlock(&c->lock);
	return 0;
fail:
	/* The chunk is absent again; waiters look again and one of them fetches. */
	pthread_mutex_lock(&c->lock);
	fetch_abort(c, ch, 0);
	pthread_mutex_unlock(&c->lock);
	return (int)n;
}

void cache_chunk_fail(struct cache_object *o, uint64_t idx, int err)
{
	struct cache *c;
	struct chunk *ch;

	if (!o || idx >= o->nr_chunks)
		return;
	c = o->cache;
	ch = &o->chunks[idx];
	pthread_mutex_lock(&c->lock);
	if (ch->state == CH_FETCHING && !(ch->flags & CH_VERIFYING))
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
	ch = &o->chunks[idx];
	pthread_mutex_lock(&c->lock);
	if (ch->state == CH_PRESENT && ch->pins > 0 && --ch->pins == 0) {
		ch->stamp = ++c->clock;
		if (!ch->flight)
			lru_append(c, ch);
		mark_dirty(c, o, idx);
	}
	pthread_mutex_unlock(&c->lock);
}

ssize_t cache_object_read(struct cache_object *o, void *buf, size_t len, uint64_t off)
{
	if (!o)
		return -EINVAL;
	if (off >= o->size)
		return 0;
	if (len > o->size - off)
		len = o->size - off;
	return o->cache->io->pread(o->data_fd, buf, len, off);
}

/* ---- objects: public ---- */

int cache_object_open(struct cache *c, const char *path, uint64_t size, const char *version,
	struct cache_object **out)
{
	struct cache_object *o, *fresh = NULL, **slot;
	uint64_t key_hash;
	int rc;

	*out = NULL;
	if (!path || !version)
		return -EINVAL;
	if (strlen(path) > MAX_PATH_BYTES || strlen(version) > MAX_VERSION_BYTES)
		return -ENAMETOOLONG;
	if (size > (UINT64_MAX >> 1))
		return -EFBIG;
	key_hash = key_hash_of(path, version, size);
again:
	pthread_mutex_lock(&c->lock);
	slot = table_slot(c, path);
	o = *slot;
	if (o && (o->size != size || strcmp(o->version, version) != 0)) {
		/* A new version: the old one leaves the table now, and its chunks and files go
		 * as soon as nobody reads it (right here when nobody does). */
		table_remove(c, o);
		o->stale = true;
		o->stale_next = c->stale;
		c->stale = o;
		dirty_remove(c, o);
		obj_ref_locked(o);
		pthread_mutex_unlock(&c->lock);
		obj_put(o);
		goto again;
	}
	if (!o) {
		/* A stale object with this very key still being read comes back to life
		 * rather than sharing file names with a new one; one being deleted is
		 * waited for. */
		for (o = c->stale; o; o = o->stale_next) {
			if (o->key_hash == key_hash && o->size == size &&
				strcmp(o->path, path) == 0 && strcmp(o->version, version) == 0)
				break;
		}
		if (o && o->dead) {
			pthread_mutex_unlock(&c->lock);
			usleep(1000);
			goto again;
		}
		if (o) {
			stale_remove(c, o);
			o->stale = false;
			table_insert(c, o);
		} else if (fresh) {
			o = fresh;
			fresh = NULL;
			table_insert(c, o);
			all_insert(c, o);
		} else {
			pthread_mutex_unlock(&c->lock);
			fresh = obj_new(c, path, version, size, key_hash);
			if (!fresh)
				return -ENOMEM;
			goto again;
		}
	}
	obj_ref_locked(o);
	pthread_mutex_unlock(&c->lock);
	obj_destroy(fresh); /* lost a race to another opener */
	rc = obj_open_fds(o);
	if (rc < 0) {
		log_warn("cache: cannot open the files of %s in %s: %s", path, c->dir,
			strerror(-rc));
		obj_put(o);
		return rc;
	}
	*out = o;
	return 0;
}

struct cache_object *cache_object_ref(struct cache_object *o)
{
	if (!o)
		return NULL;
	pthread_mutex_lock(&o->cache->lock);
	obj_ref_locked(o);
	pthread_mutex_unlock(&o->cache->lock);
	return o;
}

void cache_object_unref(struct cache_object *o)
{
	if (o)
		obj_put(o);
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

const char *cache_object_data_path(const struct cache_object *o)
{
	return o->data_path;
}

/* ---- sync ---- */

/* Makes one object's filled chunks durable, then records them as present. */
static int obj_sync(struct cache *c, struct cache_object *o)
{
	struct map_record *recs = NULL;
	uint64_t lo, hi, new_lo = UINT64_MAX, new_hi = 0;
	bool need_datasync = false;
	ssize_t n;
	int rc;

	rc = obj_open_fds(o);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&o->io_lock);
	pthread_mutex_lock(&c->lock);
	lo = o->dirty_lo;
	hi = o->dirty_hi;
	o->dirty_lo = o->dirty_hi = 0;
	for (uint64_t i = lo; i < hi; i++) {
		struct chunk *ch = &o->chunks[i];

		if (ch->state == CH_PRESENT && !(ch->flags & CH_DURABLE)) {
			ch->flags |= CH_SYNCING;
			need_datasync = true;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (lo >= hi)
		goto out;
	recs = calloc(hi - lo, sizeof(*recs));
	if (!recs) {
		rc = -ENOMEM;
		goto restore;
	}
	if (need_datasync) {
		rc = c->io->fdatasync(o->data_fd);
		if (rc < 0)
			goto restore;
	}
	pthread_mutex_lock(&c->lock);
	for (uint64_t i = lo; i < hi; i++) {
		struct chunk *ch = &o->chunks[i];
		struct map_record *r = &recs[i - lo];

		if (ch->flags & CH_SYNCING) {
			/* a fill after the snapshot clears SYNCING: those bytes are not durable */
			ch->flags = (uint8_t)((ch->flags & ~CH_SYNCING) | CH_DURABLE);
		}
		if (ch->state == CH_PRESENT && (ch->flags & CH_DURABLE)) {
			r->sum = ch->sum;
			r->stamp = ch->stamp;
			r->flags = REC_PRESENT;
			r->len = (uint32_t)chunk_len(o, i);
			r->check = record_check(r, i, o->key_hash);
		} else if (ch->state == CH_PRESENT) {
			if (i < new_lo)
				new_lo = i;
			new_hi = i + 1;
		}
	}
	if (new_hi) {
		mark_dirty(c, o, new_lo);
		mark_dirty(c, o, new_hi - 1);
	}
	pthread_mutex_unlock(&c->lock);
	n = c->io->pwrite(
		o->map_fd, recs, (hi - lo) * sizeof(*recs), o->records_off + lo * MAP_RECORD_BYTES);
	if (n < 0) {
		rc = (int)n;
		goto restore;
	}
	rc = c->io->fdatasync(o->map_fd);
	if (rc < 0)
		goto restore;
	if (!o->dir_synced) {
		/* the new files' names must survive a crash too */
		char dir[PATH_MAX];
		int dfd;

		snprintf(dir, sizeof(dir), "%s/%02x", c->dir, (unsigned)(o->key_hash >> 56));
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd) == 0)
				o->dir_synced = true;
			close(dfd);
		}
	}
	goto out;
restore:
	/* Nothing was lost: the same records are written by the next sync. */
	pthread_mutex_lock(&c->lock);
	for (uint64_t i = lo; i < hi; i++)
		o->chunks[i].flags &= (uint8_t)~CH_SYNCING;
	mark_dirty(c, o, lo);
	mark_dirty(c, o, hi - 1);
	pthread_mutex_unlock(&c->lock);
out:
	pthread_mutex_unlock(&o->io_lock);
	free(recs);
	return rc;
}

int cache_sync(struct cache *c)
{
	struct cache_object **objs = NULL, *o;
	size_t nr = 0, i;
	int rc = 0;

	/* The dirty objects are moved into an array of our own under the lock: their
	 * dirty_next links belong to c->dirty, which mark_dirty relinks (under the lock) as
	 * soon as on_dirty is false, so walking them after unlocking would follow another
	 * list and put references we never took. */
	pthread_mutex_lock(&c->lock);
	for (o = c->dirty; o; o = o->dirty_next)
		nr++;
	if (nr) {
		objs = malloc(nr * sizeof(*objs));
		if (!objs) {
			pthread_mutex_unlock(&c->lock);
			return -ENOMEM; /* the list stays: the next sync takes it */
		}
	}
	nr = 0;
	while ((o = c->dirty)) {
		c->dirty = o->dirty_next;
		o->dirty_next = NULL;
		o->on_dirty = false;
		obj_ref_locked(o);
		objs[nr++] = o;
	}
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < nr; i++) {
		int r = obj_sync(c, objs[i]);

		if (r < 0 && rc == 0) {
			log_warn("cache: syncing %s: %s", objs[i]->map_path, strerror(-r));
			rc = r;
		}
		obj_put(objs[i]);
	}
	free(objs);
	return rc;
}

/* ---- open, load, free ---- */

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Reads or writes D/meta and takes the cache's lock. */
static int meta_open(struct cache *c, char *errbuf, size_t errlen)
{
	char path[PATH_MAX], tmp[PATH_MAX], text[128];
	unsigned long long cb;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/" META_NAME, c->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		int tfd, len;

		snprintf(tmp, sizeof(tmp), "%s/" META_NAME ".%d", c->dir, (int)getpid());
		tfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (tfd < 0)
			return errf(errbuf, errlen, -errno, "cannot write %s: %s", tmp,
				strerror(errno));
		len = snprintf(text, sizeof(text), META_MAGIC "\nchunk_bytes %u\n", c->chunk_bytes);
		if (write(tfd, text, (size_t)len) != len || fsync(tfd) < 0) {
			int err = errno ? errno : EIO;

			close(tfd);
			unlink(tmp);
			return errf(
				errbuf, errlen, -err, "cannot write %s: %s", tmp, strerror(err));
		}
		close(tfd);
		/* link() fails if another process made the meta file meanwhile: read theirs */
		if (link(tmp, path) < 0 && errno != EEXIST) {
			int err = errno;

			unlink(tmp);
			return errf(
				errbuf, errlen, -err, "cannot create %s: %s", path, strerror(err));
		}
		unlink(tmp);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return errf(errbuf, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;

		close(fd);
		if (err == EWOULDBLOCK)
			return errf(errbuf, errlen, -EBUSY,
				"cache %s is in use by another ferry process", c->dir);
		return errf(errbuf, errlen, -err, "cannot lock %s: %s", path, strerror(err));
	}
	n = pread(fd, text, sizeof(text) - 1, 0);
	if (n < 0) {
		int err = errno;

		close(fd);
		return errf(errbuf, errlen, -err, "cannot read %s: %s", path, strerror(err));
	}
	text[n] = '\0';
	if (sscanf(text, META_MAGIC "\nchunk_bytes %llu\n", &cb) != 1 ||
		strncmp(text, META_MAGIC "\n", strlen(META_MAGIC) + 1) != 0) {
		close(fd);
		return errf(errbuf, errlen, -EINVAL,
			"%s is not a ferry cache (format 1) metadata file", path);
	}
	if (cb != c->chunk_bytes) {
		close(fd);
		return errf(errbuf, errlen, -EINVAL,
			"cache %s was made with chunk size %llu, not %u; use that chunk size or "
			"another cache directory",
			c->dir, cb, c->chunk_bytes);
	}
	c->meta_fd = fd;
	return 0;
}

static void unlink_pair(const char *map_path, const char *data_path)
{
	if (map_path)
		unlink(map_path);
	if (data_path)
		unlink(data_path);
}

/* Punches out bytes of the data file that no present record covers (fills that were
 * never synced before the process stopped). */
static void obj_reclaim_orphans(struct cache *c, struct cache_object *o, int fd)
{
	off_t pos = 0;

	for (;;) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0)
			return; /* ENXIO: no more data */
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return;
		for (uint64_t i = (uint64_t)data >> c->chunk_shift;
			i < o->nr_chunks && (i << c->chunk_shift) < (uint64_t)hole; i++) {
			if (o->chunks[i].state == CH_PRESENT)
				continue;
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    (off_t)(i << c->chunk_shift), (off_t)chunk_len(o, i)) < 0)
				return;
		}
		pos = hole;
	}
}

/* Loads one map file left by an earlier run; a map that does not parse is removed with
 * its data file (the cache is only a cache). Returns the object, not yet in any table. */
static struct cache_object *map_load(struct cache *c, const char *map_path)
{
	struct map_header h;
	struct cache_object *o = NULL;
	struct map_record *recs = NULL;
	char *path = NULL, *version = NULL, *data_path = NULL;
	const char *why = NULL;
	int mfd = -1, dfd = -1;
	ssize_t n;

	if (asprintf(&data_path, "%.*s.data", (int)(strlen(map_path) - 4), map_path) < 0)
		return NULL;
	mfd = open(map_path, O_RDONLY | O_CLOEXEC);
	if (mfd < 0) {
		why = "cannot open";
		goto bad;
	}
	n = c->io->pread(mfd, &h, sizeof(h), 0);
	if (n != (ssize_t)sizeof(h) || memcmp(h.magic, MAP_MAGIC, 8) != 0 ||
		h.format != MAP_FORMAT) {
		why = "not a format 1 map";
		goto bad;
	}
	if (h.chunk_bytes != c->chunk_bytes || h.path_bytes > MAX_PATH_BYTES ||
		h.version_bytes > MAX_VERSION_BYTES ||
		h.nr_chunks != (h.object_size + c->chunk_bytes - 1) >> c->chunk_shift ||
		h.records_off < MAP_HEADER_BYTES + h.path_bytes + h.version_bytes) {
		why = "header inconsistent";
		goto bad;
	}
	path = calloc(1, h.path_bytes + 1);
	version = calloc(1, h.version_bytes + 1);
	if (!path || !version)
		goto bad;
	if (c->io->pread(mfd, path, h.path_bytes, MAP_HEADER_BYTES) != (ssize_t)h.path_bytes ||
		c->io->pread(mfd, version, h.version_bytes, MAP_HEADER_BYTES + h.path_bytes) !=
			(ssize_t)h.version_bytes ||
		header_sum_of(&h, path, version) != h.header_sum || strlen(path) != h.path_bytes ||
		strlen(version) != h.version_bytes ||
		key_hash_of(path, version, h.object_size) != h.key_hash) {
		why = "header checksum mismatch";
		goto bad;
	}
	o = obj_new(c, path, version, h.object_size, h.key_hash);
	if (!o)
		goto bad;
	if (strcmp(o->map_path, map_path) != 0 || o->records_off != h.records_off) {
		why = "misplaced";
		goto bad;
	}
	dfd = open(data_path, O_RDWR | O_CLOEXEC);
	if (dfd < 0) {
		why = "data file missing";
		goto bad;
	}
	recs = calloc(o->nr_chunks ? o->nr_chunks : 1, sizeof(*recs));
	if (!recs)
		goto bad;
	n = c->io->pread(mfd, recs, o->nr_chunks * sizeof(*recs), h.records_off);
	if (n < 0) {
		why = "cannot read records";
		goto bad;
	}
	/* A short map (torn extension) leaves the rest absent: calloc'd zeros. */
	for (uint64_t i = 0; i < o->nr_chunks; i++) {
		struct map_record *r = &recs[i];
		struct chunk *ch = &o->chunks[i];

		if (!(r->flags & REC_PRESENT))
			continue;
		if (r->check != record_check(r, i, o->key_hash) || r->len != chunk_len(o, i))
			continue;
		ch->state = CH_PRESENT;
		ch->flags = CH_DURABLE; /* not VERIFIED: checked on first use */
		ch->sum = r->sum;
		ch->stamp = r->stamp;
		o->cached_bytes += r->len;
	}
	obj_reclaim_orphans(c, o, dfd);
	o->files_exist = true;
	o->dir_synced = true;
	goto out;
bad:
	if (why)
		log_warn("cache: removing %s: %s", map_path, why);
	unlink_pair(map_path, data_path);
	obj_destroy(o);
	o = NULL;
out:
	if (mfd >= 0)
		close(mfd);
	if (dfd >= 0)
		close(dfd);
	free(recs);
	free(path);
	free(version);
	free(data_path);
	return o;
}

static uint64_t obj_max_stamp(const struct cache_object *o)
{
	uint64_t m = 0;

	for (uint64_t i = 0; i < o->nr_chunks; i++)
		if (o->chunks[i].state == CH_PRESENT && o->chunks[i].stamp > m)
			m = o->chunks[i].stamp;
	return m;
}

static int cmp_stamp(const void *a, const void *b)
{
	const struct chunk *x = *(struct chunk *const *)a, *y = *(struct chunk *const *)b;

	return x->stamp < y->stamp ? -1 : x->stamp > y->stamp;
}

/* Adds a loaded object: the newer of two versions of one path wins, the other is
 * deleted. Single-threaded (cache_open). */
static void load_add(struct cache *c, struct cache_object *o)
{
	struct cache_object **slot = table_slot(c, o->path), *old = *slot;

	if (old) {
		struct cache_object *loser = obj_max_stamp(old) >= obj_max_stamp(o) ? o : old;

		log_info("cache: two versions of %s; removing %s", o->path, loser->map_path);
		unlink_pair(loser->map_path, loser->data_path);
		if (loser == o) {
			obj_destroy(o);
			return;
		}
		table_remove(c, old);
		if (old->all_prev)
			old->all_prev->all_next = old->all_next;
		else
			c->all = old->all_next;
		if (old->all_next)
			old->all_next->all_prev = old->all_prev;
		c->st.nr_objects--;
		obj_destroy(old);
	}
	table_insert(c, o);
	all_insert(c, o);
}

/* Loads every map under D/XX/ (removing those of objects with no chunk left), then rebuilds
 * the LRU order from the stamps. */
static int cache_load(struct cache *c)
{
	struct chunk **present = NULL;
	size_t nr_present = 0, cap = 0;

	for (unsigned b = 0; b < 256; b++) {
		char sub[PATH_MAX];
		struct dirent *de;
		DIR *d;

		snprintf(sub, sizeof(sub), "%s/%02x", c->dir, b);
		d = opendir(sub);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			size_t len = strlen(de->d_name);
			char path[PATH_MAX + 32];
			struct cache_object *o;

			if (len != 16 + 4 && len != 16 + 5)
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
			if (len == 16 + 5 && strcmp(de->d_name + 16, ".data") == 0) {
				/* a data file whose map is gone (removed mid-way): an orphan */
				char map[PATH_MAX + 32];

				snprintf(map, sizeof(map), "%.*s.map", (int)(strlen(path) - 5),
					path);
				if (access(map, F_OK) < 0 && errno == ENOENT)
					unlink(path);
				continue;
			}
			if (strcmp(de->d_name + 16, ".map") != 0)
				continue;
			o = map_load(c, path);
			if (o && !o->cached_bytes) {
				/* Every chunk was evicted (or never synced): nothing to keep, and
				 * maps kept for emptied objects would make every mount slower. */
				unlink_pair(o->map_path, o->data_path);
				obj_destroy(o);
				continue;
			}
			if (o)
				load_add(c, o);
		}
		closedir(d);
	}
	for (struct cache_object *o = c->all; o; o = o->all_next) {
		for (uint64_t i = 0; i < o->nr_chunks; i++) {
			struct chunk *ch = &o->chunks[i];

			if (ch->state != CH_PRESENT)
				continue;
			if (nr_present == cap) {
				size_t ncap = cap ? cap * 2 : 1024;
				struct chunk **np = realloc(present, ncap * sizeof(*np));

				if (!np) {
					free(present);
					return -ENOMEM;
				}
				present = np;
				cap = ncap;
			}
			present[nr_present++] = ch;
			c->st.used_bytes += chunk_len(o, i);
			c->st.nr_chunks++;
			if (ch->stamp > c->clock)
				c->clock = ch->stamp;
		}
	}
	if (nr_present)
		qsort(present, nr_present, sizeof(*present), cmp_stamp);
	for (size_t i = 0; i < nr_present; i++)
		lru_append(c, present[i]);
	free(present);
	return 0;
}

int cache_open(struct cache **out, const struct cache_config *cfg, char *errbuf, size_t errlen)
{
	struct cache *c;
	struct chunk *victims;
	int rc;

	*out = NULL;
	if (!cfg || !cfg->dir || !cfg->dir[0])
		return errf(errbuf, errlen, -EINVAL, "no cache directory given");
	if (cfg->chunk_bytes < (64u << 10) || cfg->chunk_bytes > (64u << 20) ||
		(cfg->chunk_bytes & (cfg->chunk_bytes - 1)))
		return errf(errbuf, errlen, -EINVAL,
			"chunk size %u is not a power of two from 64 KiB to 64 MiB",
			cfg->chunk_bytes);
	if (strlen(cfg->dir) > PATH_MAX - 64)
		return errf(errbuf, errlen, -ENAMETOOLONG, "cache directory name too long");
	c = calloc(1, sizeof(*c));
	if (!c)
		return errf(errbuf, errlen, -ENOMEM, "out of memory");
	c->meta_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->lru.lru_next = c->lru.lru_prev = &c->lru;
	c->chunk_bytes = cfg->chunk_bytes;
	c->chunk_shift = (uint32_t)__builtin_ctz(cfg->chunk_bytes);
	c->max_bytes = cfg->max_bytes;
	c->st.max_bytes = cfg->max_bytes;
	c->io = cfg->io ? cfg->io : io_default();
	c->nr_buckets = 64;
	c->table = calloc(c->nr_buckets, sizeof(*c->table));
	c->dir = strdup(cfg->dir);
	if (!c->table || !c->dir) {
		rc = errf(errbuf, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = mkdir_p(c->dir);
	if (rc < 0) {
		rc = errf(errbuf, errlen, rc, "cannot create cache directory %s: %s", c->dir,
			strerror(-rc));
		goto fail;
	}
	rc = meta_open(c, errbuf, errlen);
	if (rc < 0)
		goto fail;
	rc = cache_load(c);
	if (rc < 0) {
		rc = errf(errbuf, errlen, rc, "cannot load cache %s: %s", c->dir, strerror(-rc));
		goto fail;
	}
	/* A smaller limit than last time: shrink now. */
	victims = pick_victims(c);
	evict_victims(c, victims);
	*out = c;
	return 0;
fail:
	cache_free(c);
	return rc;
}

void cache_free(struct cache *c)
{
	struct cache_object *o, *next;

	if (!c)
		return;
	/* Deliberately no sync: records are written only by cache_sync (the daemon calls it at
	 * unmount), so a crash and a free leave the same state behind. */
	for (size_t i = 0; i < c->nr_buckets && c->table; i++)
		c->table[i] = NULL;
	for (o = c->all; o; o = next) {
		next = o->all_next;
		for (uint64_t i = 0; i < o->nr_chunks; i++) {
			if (o->chunks[i].flight) {
				struct flight *f = o->chunks[i].flight;

				/* a caller still fetching at free: a bug on their side; do not
				 * leave waiters asleep on freed memory */
				o->chunks[i].flight = NULL;
				f->done = true;
				f->result = -ESHUTDOWN;
				pthread_cond_broadcast(&f->cond);
				if (--f->refs == 0) {
					pthread_cond_destroy(&f->cond);
					free(f);
				}
			}
		}
		obj_destroy(o);
	}
	if (c->meta_fd >= 0)
		close(c->meta_fd);
	pthread_mutex_destroy(&c->lock);
	free(c->table);
	free(c->dir);
	free(c);
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
