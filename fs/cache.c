/* The chunk cache on local disk (see cache.h): chunk states, single flight, per-block
 * checksums checked on every read, LRU eviction, persistence, and a fail-safe mode for a full
 * or failing volume. Sits between the fetch engine (which fills chunks) and the FUSE reads. */
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
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/cache.h"
#include "fs/io.h"
#include "fs/log.h"
#include "fs/remote.h"

/*
 * On-disk format (format 2)
 * =========================
 * Under the cache directory D (one per source), owned by the daemon's user and mode 0700;
 * every folder the cache makes below it is 0700 and every file 0600, whatever the umask:
 *
 *   D/meta                 text, two lines: "ferry-cache 2" and "chunk_bytes N". Written once
 *                          when the cache is made (temporary file D/meta.PID, fsync, link). A
 *                          cache with another chunk size is refused, not converted. A format 1
 *                          cache ("ferry-cache 1") is emptied (its D/XX folders removed) and
 *                          made again as format 2, with one log line. The running process holds
 *                          flock(LOCK_EX) on it: one process per cache.
 *   D/XX/H.data            the object version's bytes, sparse: byte k of the object is byte
 *                          k of the file; chunks never fetched or evicted are holes. The file
 *                          is as long as the object. Made when the object is first opened.
 *   D/XX/H.map             which chunks of H.data are present, with their block checksums, see
 *                          below. Made at the object's first cache_sync (D/XX/H.map.tmp with
 *                          the header, fsync, rename), then updated in place.
 *   D/listings/            not the cache's (the daemon keeps its listings there).
 *
 * H is the 16-hex-digit XXH3-64 of the key: path, a NUL, version (ETag or mtime text), a
 * NUL, object size (8 bytes, little-endian); XX is its first two digits (256 folders).
 *
 * H.map: a 64-byte header, the path and version bytes, zero padding up to records_off (a
 * multiple of 512), then one 32-byte record per chunk, so no record straddles a sector; zero
 * padding up to sums_off (records_off + 32 * nr_chunks rounded up to 512), then one slot of
 * chunk_bytes / 65536 block sums (u64 each) per chunk: chunk i's slot is at
 * sums_off + 8 * i * (chunk_bytes / 65536).
 *   header: magic "FERRYMAP", u32 format (2), u32 chunk_bytes, u64 object_size,
 *           u64 nr_chunks, u64 key hash (= H), u32 path_bytes, u32 version_bytes,
 *           u32 records_off, u32 zero, u64 XXH3-64 of the first 56 header bytes followed
 *           by the path and version bytes.
 *   record: u64 XXH3-64 of the chunk's block sums (the first nr_blocks u64 of its slot),
 *           u64 last-use stamp (a cache-wide logical clock), u32 flags (bit 0: present),
 *           u32 chunk length, u64 XXH3-64 of the first 24 record bytes seeded with
 *           (index XOR H): a torn or misplaced record reads as absent, and so does a record
 *           whose sum does not match its slot (a torn slot). An all-zero record is absent:
 *           the map is sparse, and loading reads only its written extents (SEEK_DATA).
 *   block sum: XXH3-64 (seed 0) of one 64 KiB block of the object, offset-aligned (the
 *           object's last block may be short); a chunk of length L has ceil(L / 65536).
 * All integers are in host byte order (the cache is local to the machine).
 *
 * Write order: chunk bytes go to H.data first; cache_sync() fdatasyncs H.data and only
 * then writes the slots and records of the present chunks and fdatasyncs H.map, so a record
 * says present only when the bytes under it are durable. Eviction writes the absent record
 * first, then punches the hole. Every read of H.data is checked block by block against the
 * sums: a block that does not verify (a crash left a present record over bytes that changed
 * or were punched, the disk failed, someone wrote the file) makes its chunk absent (record
 * cleared, hole punched) and it is fetched again. Bytes in H.data under absent records
 * (fills never synced) are punched out when the cache is opened, so disk use matches the
 * maps. Maps and data files that do not parse, or are not owned by the daemon's user, are
 * removed when the cache is opened, never served; so are leftover H.map.tmp files.
 */

#define META_NAME	  "meta"
#define META_MAGIC	  "ferry-cache 2"
#define META_MAGIC_V1	  "ferry-cache 1"
#define MAP_MAGIC	  "FERRYMAP"
#define MAP_FORMAT	  2
#define MAP_HEADER_BYTES  64
#define MAP_RECORD_BYTES  32
#define MAP_ALIGN	  512
#define MAP_SUMS_ALIGN	  512
#define REC_PRESENT	  1u
#define MAX_PATH_BYTES	  16384
#define MAX_VERSION_BYTES 1024
#define MAX_OBJECT_BYTES  (UINT64_MAX >> 1)

#define BLOCK_SHIFT 16
_Static_assert(CACHE_BLOCK_BYTES == 1u << BLOCK_SHIFT, "block size");

/* Chunk state lives in pages of this many chunks, made when one of them is first touched. */
#define CHUNKS_PER_PAGE 64
/* A read copies the sums of at most this many blocks (4 MiB) under the lock at a time. */
#define READ_GROUP_BLOCKS 64
/* Consecutive disk errors after which the cache stops storing (degraded). */
#define DEGRADE_AFTER 8
/* Records read at once when loading a map. */
#define LOAD_RECORDS 2048

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
 * c->lock (one mutex for the whole cache) protects every chunk's state, flags, pins, sums,
 * stamp, LRU links and flight; the chunk pages and their tables; object reference counts;
 * the object tables and lists; the counters. Its critical sections are a few pointer
 * operations: no disk I/O, no allocation on the hit path (acquire, read, release of a present
 * chunk: lock, pin, unlock; a read copies the block sums it needs under the lock and reads
 * and checks unlocked, on a descriptor that lives as long as the caller's reference).
 * At ~1.5 GB/s of 1 MiB reads that is ~6,000 lock round trips a second: far from contended.
 *
 * o->io_lock (one per object) serialises what changes an object's files other than chunk
 * data writes: creating and opening/closing its descriptors, writing its map records
 * (cache_sync, eviction), punching holes. Lock order: o->io_lock, then c->lock; c->lock is
 * never held while waiting for an io_lock, and no io_lock is held while evicting (which
 * takes other objects' io_locks). Chunk data writes need no lock: a chunk being filled is
 * FETCHING, which keeps everyone else off its byte range.
 *
 * Waiting: a chunk that is FETCHING or EVICTING has a struct flight; other acquirers sleep
 * on the flight's condition variable (with c->lock) until it completes or, for a reader that
 * can take bytes in memory, until the fetcher lands them there. Every change a waiter waits
 * for (done, landed, the last copier gone) is made under c->lock and broadcast on that
 * condition variable, so no wakeup is lost; nobody sleeps on a timer.
 */

enum chunk_state {
	CH_ABSENT,   /* no bytes; the first acquirer becomes the fetcher */
	CH_FETCHING, /* one fetcher owns it until fill or fail; flight set */
	CH_PRESENT,  /* bytes in the data file, sums set; evictable when pins == 0 */
	CH_EVICTING, /* chosen as a victim or dropped as damaged; record cleared and hole
		      * punched outside the lock */
};

enum chunk_flags {
	CH_DURABLE = 1 << 0, /* its bytes have been fdatasync'd: a record may say present */
	CH_SYNCING = 1 << 1, /* in the current cache_sync's fdatasync */
	CH_IN_LRU = 1 << 2,
};

/* One in-progress fetch or eviction of a chunk: the one place a chunk in flight lives. refs
 * counts the chunk's pointer (until completion) and each waiter; the last one frees it. All
 * fields are protected by c->lock. result: 0 tells waiters to look at the chunk again, < 0 is
 * the fetcher's error which they return. landed: the fetcher's buffer of the chunk's bytes
 * (cache_chunk_land, or cache_chunk_fill itself), which waiters copy from while the chunk is
 * not on disk yet; it is taken away, and the last copier waited for, before the flight
 * completes, so the fetcher may free it once fill or fail returns. */
struct flight {
	pthread_cond_t cond; /* done, landed set, nr_copying back to 0 */
	unsigned refs;
	bool done;
	int result;
	const char *landed;  /* NULL: no bytes in memory */
	unsigned nr_copying; /* waiters copying from landed, lock dropped */
};

/* One chunk of one object version. All fields protected by c->lock. Invariants: in the LRU
 * list iff PRESENT, pins == 0, !flight; flight != NULL iff FETCHING or EVICTING; sums set iff
 * PRESENT (one inline sum when a chunk is one block, else an array of its nr_blocks).
 * pins counts holders; a chunk dropped as damaged under its holders keeps their pins (they
 * release it later) while it is fetched and filled again. gen changes at every fill, so a
 * reader that checked old bytes does not drop the new ones. */
struct chunk {
	struct chunk *lru_prev, *lru_next; /* c->lru; lru_next also chains a victim list */
	struct chunk_page *page;
	struct flight *flight;
	union {
		uint64_t one;
		uint64_t *many;
	} sums;
	uint64_t stamp; /* last use, c->clock */
	uint32_t pins;
	uint16_t gen;
	uint8_t state;
	uint8_t flags;
};

/* CHUNKS_PER_PAGE chunks of one object, made when one of them is first touched and freed
 * with the object: memory follows the chunks touched, not the size an object claims.
 * Protected by c->lock. */
struct chunk_page {
	struct chunk_page *hash_next; /* o->page_table bucket */
	struct chunk_page *next;      /* o->pages */
	struct cache_object *obj;
	uint64_t first; /* index of ch[0] */
	bool dirty;	/* records to rewrite at the next sync */
	struct chunk ch[CHUNKS_PER_PAGE];
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
	uint64_t sums_off;

	/* The remote identity (path, size, etag, mtime) the fetcher reads it by: set under
	 * c->lock by the first cache_object_open (an object loaded from disk has none before),
	 * immutable after. The key fixes it: the version is the ETag, or the mtime when there is
	 * none. remote.etag points at version or at etag_copy. */
	struct remote_object remote;
	char *etag_copy;
	bool have_remote;

	/* protected by c->lock */
	unsigned refs;
	bool stale, dead;
	struct cache_object *hash_next;		  /* c->table bucket, keyed by path */
	struct cache_object *all_prev, *all_next; /* c->all, every object until freed */
	struct cache_object *stale_next;	  /* c->stale, while stale */
	struct cache_object *dirty_next;	  /* c->dirty, when on_dirty */
	bool on_dirty;
	uint64_t cached_bytes;
	struct chunk_page **page_table; /* nr_page_buckets, a power of two (or 0) */
	uint64_t nr_page_buckets, nr_pages;
	struct chunk_page *pages; /* every page */

	/* protected by io_lock; data_fd is read without it by holders of a reference */
	pthread_mutex_t io_lock;
	int data_fd, map_fd;
	bool data_exists, map_exists, dir_synced;
};

/* Counters and lists protected by lock; everything else immutable after cache_open. */
struct cache {
	char *dir;
	const struct io_backend *io;
	uint32_t chunk_bytes, chunk_shift;
	unsigned lock_wait_ms;
	uint32_t blocks_per_chunk;
	uint64_t max_bytes;
	uid_t euid;
	int meta_fd; /* holds the flock */

	pthread_mutex_t lock;
	struct cache_object **table; /* current objects by path hash; nr_buckets a power of 2 */
	size_t nr_buckets, nr_in_table;
	struct cache_object *all;   /* every object, current, stale or being deleted */
	struct cache_object *stale; /* stale objects: still read, or being deleted */
	pthread_cond_t dead_cond;   /* broadcast when a deleted object leaves c->stale */
	struct cache_object *dirty; /* objects with records to write */
	struct chunk lru;	    /* list head: lru.lru_next is the least recently used */
	uint64_t clock;
	unsigned fail_run;     /* disk errors since the last successful fill */
	time_t last_err_log;   /* rate limit of disk error lines: one a second */
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

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t chunk_len(const struct cache_object *o, uint64_t idx)
{
	uint64_t cb = o->cache->chunk_bytes, off = idx * cb;

	return o->size - off < cb ? o->size - off : cb;
}

static uint64_t blocks_of(uint64_t len)
{
	return (len >> BLOCK_SHIFT) + ((len & (CACHE_BLOCK_BYTES - 1)) != 0);
}

static uint64_t chunk_idx(const struct chunk *ch)
{
	return ch->page->first + (uint64_t)(ch - ch->page->ch);
}

static struct cache_object *chunk_obj(const struct chunk *ch)
{
	return ch->page->obj;
}

static uint64_t *chunk_sums(const struct cache *c, struct chunk *ch)
{
	return c->blocks_per_chunk == 1 ? &ch->sums.one : ch->sums.many;
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

static void punch(int fd, uint64_t off, uint64_t len)
{
	if (fd >= 0 && len)
		(void)fallocate(
			fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
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
static void disk_error(struct cache *c, int err, const char *what, const char *path)
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
static void disk_full_recovered(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->st.disk_errors++;
	pthread_mutex_unlock(&c->lock);
}

static bool cache_degraded(struct cache *c)
{
	bool d;

	pthread_mutex_lock(&c->lock);
	d = c->st.degraded;
	pthread_mutex_unlock(&c->lock);
	return d;
}

/* ---- chunk pages: under c->lock (or single-threaded while loading) ---- */

static struct chunk *chunk_find(struct cache_object *o, uint64_t idx)
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
static struct chunk *chunk_get(struct cache_object *o, uint64_t idx)
{
	struct chunk *ch = chunk_find(o, idx);
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
static unsigned page_nr_chunks(const struct cache_object *o, const struct chunk_page *p)
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
	flight_unref(f);
}

static void obj_mark_dirty(struct cache *c, struct cache_object *o)
{
	if (!o->on_dirty && !o->stale) {
		o->on_dirty = true;
		o->dirty_next = c->dirty;
		c->dirty = o;
	}
}

/* The chunk's record must be written again by the next sync. */
static void mark_dirty(struct cache *c, struct chunk *ch)
{
	ch->page->dirty = true;
	obj_mark_dirty(c, chunk_obj(ch));
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
	for (struct chunk_page *p = o->pages; p; p = p->next) {
		for (unsigned k = 0; k < page_nr_chunks(o, p); k++) {
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

static void obj_destroy(struct cache_object *o)
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
		obj_destroy(o);
		return NULL;
	}
	return o;
}

/* Checks that path is a folder of ours and private (making it so when it is ours). */
static int dir_check_private(struct cache *c, const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != c->euid)
		return -EPERM;
	if ((sb.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
		return -errno;
	return 0;
}

/* Makes D/XX for an object's files: 0700 whatever the umask, and ours. */
static int obj_make_dir(struct cache_object *o)
{
	struct cache *c = o->cache;
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/%02x", c->dir, (unsigned)(o->key_hash >> 56));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return dir_check_private(c, dir);
}

/* Creates a private file (0600 whatever the umask), replacing what was there. */
static int create_private(const char *path, int flags)
{
	int fd = open(path, flags | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0) {
		int err = -errno;

		close(fd);
		unlink(path);
		return err;
	}
	return fd;
}

/* Creates a new object's data file: empty, sparse, as long as the object. Under io_lock. */
static int obj_create_data(struct cache_object *o)
{
	int rc = obj_make_dir(o), fd;

	if (rc < 0)
		return rc;
	fd = create_private(o->data_path, O_RDWR);
	if (fd < 0)
		return fd;
	if (ftruncate(fd, (off_t)o->size) < 0) {
		rc = -errno;
		close(fd);
		unlink(o->data_path);
		return rc;
	}
	o->data_fd = fd;
	o->data_exists = true;
	return 0;
}

/* Creates a new object's map atomically: the header in H.map.tmp, fsync, rename; all records
 * absent (the rest of the map is a hole). Under io_lock. */
static int obj_create_map(struct cache_object *o)
{
	struct cache *c = o->cache;
	struct map_header h = {.format = MAP_FORMAT};
	size_t pl = strlen(o->path), vl = strlen(o->version);
	char *buf = NULL, tmp[PATH_MAX + 8];
	ssize_t n;
	int fd, rc;

	snprintf(tmp, sizeof(tmp), "%s.tmp", o->map_path);
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
	fd = create_private(tmp, O_RDWR);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	n = c->io->pwrite(fd, buf, o->records_off, 0);
	free(buf);
	rc = n < 0 ? (int)n : c->io->fdatasync(fd);
	if (rc == 0 && rename(tmp, o->map_path) < 0)
		rc = -errno;
	if (rc < 0) {
		close(fd);
		unlink(tmp);
		return rc;
	}
	o->map_fd = fd;
	o->map_exists = true;
	o->dir_synced = false; /* a new name in D/XX */
	return 0;
}

/* Opens the data file (creating it for a new object when create is set, unless the cache is
 * degraded). Under io_lock. */
static int obj_open_data_locked(struct cache_object *o, bool create)
{
	if (o->data_fd >= 0)
		return 0;
	if (!o->data_exists) {
		if (!create)
			return -ENOENT;
		return cache_degraded(o->cache) ? -EROFS : obj_create_data(o);
	}
	o->data_fd = open(o->data_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	return o->data_fd < 0 ? -errno : 0;
}

/* Makes sure the data descriptor is open, creating the file for a new object. The caller
 * holds a reference. */
static int obj_open_data(struct cache_object *o)
{
	int rc;

	pthread_mutex_lock(&o->io_lock);
	rc = obj_open_data_locked(o, true);
	pthread_mutex_unlock(&o->io_lock);
	return rc;
}

/* Opens the map (creating it when create is set and it does not exist yet). Under io_lock. */
static int obj_open_map(struct cache_object *o, bool create)
{
	if (o->map_fd >= 0)
		return 0;
	if (!o->map_exists)
		return create ? obj_create_map(o) : -ENOENT;
	o->map_fd = open(o->map_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	return o->map_fd < 0 ? -errno : 0;
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
		obj_destroy(o);
	}
}

/* ---- eviction ---- */

/* Chooses least-recently used unpinned chunks until used_bytes <= max_bytes and at least
 * need bytes are chosen, or the list is empty. Each victim becomes EVICTING with a flight,
 * stops counting, and its object gets a reference; the caller runs evict_victims() after
 * dropping c->lock. */
static struct chunk *pick_victims(struct cache *c, uint64_t need)
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
		struct cache_object *o = chunk_obj(ch);
		uint64_t idx = chunk_idx(ch), len = chunk_len(o, idx);
		struct map_record zero = {0};
		ssize_t n;

		victims = ch->lru_next;
		ch->lru_next = NULL;
		pthread_mutex_lock(&o->io_lock);
		if (obj_open_map(o, false) == 0) {
			n = c->io->pwrite(o->map_fd, &zero, sizeof(zero),
				o->records_off + idx * MAP_RECORD_BYTES);
			if (n < 0) {
				/* The record may still say present: the sums catch the hole. */
				pthread_mutex_unlock(&o->io_lock);
				disk_error(c, (int)n, "clearing a record of", o->map_path);
				pthread_mutex_lock(&o->io_lock);
			}
		}
		if (obj_open_data_locked(o, false) == 0 &&
			fallocate(o->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(idx << c->chunk_shift), (off_t)len) < 0)
			log_warn("cache: punching chunk %" PRIu64 " of %s: %s", idx, o->data_path,
				strerror(errno));
		pthread_mutex_unlock(&o->io_lock);
		pthread_mutex_lock(&c->lock);
		ch->state = CH_ABSENT;
		ch->flags = 0;
		mark_dirty(c, ch);
		flight_finish(ch, 0);
		pthread_mutex_unlock(&c->lock);
		obj_put(o);
	}
}

/* Evicts at least need bytes of least recently used unpinned chunks (for a full volume);
 * false when there was nothing to evict. No io_lock held. */
static bool make_room(struct cache *c, uint64_t need)
{
	struct chunk *victims;

	pthread_mutex_lock(&c->lock);
	victims = pick_victims(c, need);
	pthread_mutex_unlock(&c->lock);
	if (!victims)
		return false;
	evict_victims(c, victims);
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
	ch = chunk_find(o, idx);
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
	obj_ref_locked(o);
	ch->lru_next = NULL;
	pthread_mutex_unlock(&c->lock);
	if (err == -EBADMSG)
		log_warn("cache: chunk %" PRIu64 " of %s failed its checksum; dropped, fetching it "
			 "again",
			idx, o->path);
	else
		disk_error(c, err, "reading", o->data_path);
	evict_victims(c, ch);
}

/* Opens (or makes) the data file; a full volume gets one chunk's worth of least recently used
 * chunks evicted and one more try. No io_lock held (eviction takes others'). */
static int obj_open_data_roomy(struct cache_object *o)
{
	int rc = obj_open_data(o);

	if ((rc == -ENOSPC || rc == -EDQUOT) && make_room(o->cache, o->cache->chunk_bytes)) {
		rc = obj_open_data(o);
		if (rc == 0)
			disk_full_recovered(o->cache);
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
static int acquire(struct cache_object *o, uint64_t idx, bool wait, void *dst, uint64_t off,
	size_t len)
{
	struct cache *c;
	struct chunk *ch;
	int rc;

	if (!o || idx >= o->nr_chunks)
		return -EINVAL;
	c = o->cache;
	if (dst && (off < idx << c->chunk_shift || off + len > (idx << c->chunk_shift) +
							     chunk_len(o, idx)))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	ch = chunk_get(o, idx);
	if (!ch) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		struct flight *f = ch->flight;

		if (ch->state == CH_PRESENT) {
			/* Checked block by block as it is read, not here: every read verifies. */
			if (ch->pins++ == 0)
				lru_remove(c, ch);
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
			flight_unref(f);
			rc = CACHE_COPIED;
			goto out;
		}
		rc = f->result;
		flight_unref(f);
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
	ch = chunk_find(o, idx);
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
		punch(o->data_fd, off, len);
		if (make_room(c, len)) {
			n = c->io->pwrite(o->data_fd, buf, len, off);
			if (n >= 0)
				disk_full_recovered(c);
		}
	}
	if (n < 0)
		punch(o->data_fd, off, len);
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
	ch = chunk_find(o, idx);
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
			disk_error(c, rc, "creating", o->data_path);
		goto fail;
	}

	/* Reserve the bytes, then make room: used_bytes counts fills in progress, so
	 * concurrent fills cannot all slip under the limit at once. */
	pthread_mutex_lock(&c->lock);
	c->st.used_bytes += len;
	victims = pick_victims(c, 0);
	/* Only pinned chunks and other fills in progress remain: allow one chunk over. */
	over = c->max_bytes && c->st.used_bytes > c->max_bytes + c->chunk_bytes;
	if (over)
		c->st.used_bytes -= len;
	pthread_mutex_unlock(&c->lock);
	evict_victims(c, victims);
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
		disk_error(c, rc, "writing", o->data_path);
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
	mark_dirty(c, ch);
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
	ch = chunk_find(o, idx);
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
	ch = chunk_find(o, idx);
	/* A chunk dropped under its holders keeps their pins until they release here. */
	if (ch && ch->pins > 0 && --ch->pins == 0 && ch->state == CH_PRESENT) {
		ch->stamp = ++c->clock;
		lru_append(c, ch);
		mark_dirty(c, ch);
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
		ch = chunk_find(o, idx);
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

int cache_object_block_sums(
	struct cache_object *o, uint64_t off, uint64_t len, uint64_t *sums, size_t max_sums)
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
		struct chunk *ch = chunk_find(o, idx);

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
static void obj_set_remote(struct cache_object *o, const struct remote_object *obj, char **etag_copy)
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
	key_hash = key_hash_of(path, version, size);
	pthread_mutex_lock(&c->lock);
	for (;;) {
		slot = table_slot(c, path);
		o = *slot;
		if (o && (o->size != size || strcmp(o->version, version) != 0)) {
			/* A new version: the old one leaves the table now, and its chunks and
			 * files go as soon as nobody reads it (right here when nobody does). */
			table_remove(c, o);
			o->stale = true;
			o->stale_next = c->stale;
			c->stale = o;
			dirty_remove(c, o);
			obj_ref_locked(o);
			pthread_mutex_unlock(&c->lock);
			obj_put(o);
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
			table_insert(c, o);
			break;
		}
		if (fresh) {
			o = fresh;
			fresh = NULL;
			table_insert(c, o);
			all_insert(c, o);
			break;
		}
		pthread_mutex_unlock(&c->lock);
		fresh = obj_new(c, path, version, size, key_hash);
		if (!fresh) {
			free(etag_copy);
			return -ENOMEM;
		}
		pthread_mutex_lock(&c->lock);
	}
	obj_set_remote(o, obj, &etag_copy);
	obj_ref_locked(o);
	pthread_mutex_unlock(&c->lock);
	free(etag_copy);
	obj_destroy(fresh); /* lost a race to another opener */
	/* A full or failing volume does not fail the open: the object has no files, its chunks
	 * are fetched and not stored, and a later fill tries to make the files again. */
	rc = obj_open_data_roomy(o);
	if (rc == -ENOMEM) {
		obj_put(o);
		return rc;
	}
	if (rc < 0 && rc != -EROFS)
		disk_error(c, rc, "creating", o->data_path);
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

const struct remote_object *cache_object_remote(const struct cache_object *o)
{
	return &o->remote;
}

const char *cache_object_data_path(const struct cache_object *o)
{
	return o->data_path;
}

/* ---- sync ---- */

/* Under c->lock: fills one dirty page's records (and, for present durable chunks, their
 * slots of block sums) into recs and slots; has[k] tells which slots to write. Returns true
 * when the page holds present chunks not yet durable (it stays dirty). */
static bool page_records(
	struct cache *c, struct chunk_page *p, struct map_record *recs, uint64_t *slots, bool *has)
{
	struct cache_object *o = p->obj;
	uint32_t bpc = c->blocks_per_chunk;
	bool redirty = false;

	for (unsigned k = 0; k < page_nr_chunks(o, p); k++) {
		struct chunk *ch = &p->ch[k];
		uint64_t idx = p->first + k, len = chunk_len(o, idx);
		struct map_record *r = &recs[k];

		has[k] = false;
		memset(r, 0, sizeof(*r));
		if (ch->flags & CH_SYNCING) {
			/* a fill after the snapshot clears SYNCING: those bytes are not durable */
			ch->flags = (uint8_t)((ch->flags & ~CH_SYNCING) | CH_DURABLE);
		}
		if (ch->state == CH_PRESENT && (ch->flags & CH_DURABLE)) {
			uint64_t *slot = slots + (uint64_t)k * bpc;

			memcpy(slot, chunk_sums(c, ch), blocks_of(len) * sizeof(*slot));
			memset(slot + blocks_of(len), 0, (bpc - blocks_of(len)) * sizeof(*slot));
			r->sum = XXH3_64bits(slot, blocks_of(len) * sizeof(*slot));
			r->stamp = ch->stamp;
			r->flags = REC_PRESENT;
			r->len = (uint32_t)len;
			r->check = record_check(r, idx, o->key_hash);
			has[k] = true;
		} else if (ch->state == CH_PRESENT) {
			redirty = true;
		}
	}
	return redirty;
}

/* Writes one page's slots (runs of present chunks only: a sparse map stays sparse), then its
 * records. Under io_lock. */
static int page_write(struct cache *c, struct cache_object *o, struct chunk_page *p,
	const struct map_record *recs, const uint64_t *slots, const bool *has)
{
	uint64_t slot_bytes = (uint64_t)c->blocks_per_chunk * sizeof(uint64_t);
	unsigned nk = page_nr_chunks(o, p), k = 0, j;
	ssize_t n;

	while (k < nk) {
		if (!has[k]) {
			k++;
			continue;
		}
		for (j = k; j < nk && has[j]; j++)
			;
		n = c->io->pwrite(o->map_fd, (const char *)slots + k * slot_bytes,
			(j - k) * slot_bytes, o->sums_off + (p->first + k) * slot_bytes);
		if (n < 0)
			return (int)n;
		k = j;
	}
	n = c->io->pwrite(
		o->map_fd, recs, nk * sizeof(*recs), o->records_off + p->first * MAP_RECORD_BYTES);
	return n < 0 ? (int)n : 0;
}

/* Makes one object's filled chunks durable, then records them as present. */
static int obj_sync(struct cache *c, struct cache_object *o)
{
	struct chunk_page **dirty = NULL;
	struct map_record *recs = NULL;
	uint64_t *slots = NULL;
	bool has[CHUNKS_PER_PAGE];
	bool need_datasync = false, any_present = false;
	size_t nr = 0, i;
	int rc = 0;

	pthread_mutex_lock(&o->io_lock);
	pthread_mutex_lock(&c->lock);
	for (struct chunk_page *p = o->pages; p; p = p->next)
		nr += p->dirty;
	if (nr) {
		dirty = malloc(nr * sizeof(*dirty));
		if (!dirty) {
			obj_mark_dirty(c, o); /* the pages stay dirty: the next sync takes them */
			pthread_mutex_unlock(&c->lock);
			rc = -ENOMEM;
			goto out;
		}
	}
	nr = 0;
	for (struct chunk_page *p = o->pages; p; p = p->next) {
		if (!p->dirty)
			continue;
		p->dirty = false;
		dirty[nr++] = p;
		for (unsigned k = 0; k < page_nr_chunks(o, p); k++) {
			struct chunk *ch = &p->ch[k];

			if (ch->state == CH_PRESENT && !(ch->flags & CH_DURABLE)) {
				ch->flags |= CH_SYNCING;
				need_datasync = true;
			}
			any_present |= ch->state == CH_PRESENT;
		}
	}
	pthread_mutex_unlock(&c->lock);
	/* Nothing stored, or only absences to record in a map not made yet: no map to
	 * write (an emptied object's map would only take room). */
	if (!nr || !o->data_exists || (!o->map_exists && !any_present))
		goto out;
	recs = calloc(CHUNKS_PER_PAGE, sizeof(*recs));
	slots = calloc((size_t)CHUNKS_PER_PAGE * c->blocks_per_chunk, sizeof(*slots));
	if (!recs || !slots) {
		rc = -ENOMEM;
		goto restore;
	}
	rc = obj_open_data_locked(o, false);
	if (rc == 0 && need_datasync)
		rc = c->io->fdatasync(o->data_fd);
	if (rc == 0)
		rc = obj_open_map(o, true);
	if (rc < 0)
		goto disk;
	for (i = 0; i < nr; i++) {
		bool redirty;

		pthread_mutex_lock(&c->lock);
		redirty = page_records(c, dirty[i], recs, slots, has);
		if (redirty)
			mark_dirty(c, &dirty[i]->ch[0]);
		pthread_mutex_unlock(&c->lock);
		rc = page_write(c, o, dirty[i], recs, slots, has);
		if (rc < 0)
			goto disk;
	}
	rc = c->io->fdatasync(o->map_fd);
	if (rc < 0)
		goto disk;
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
disk:
	/* A full or failing volume: what was written is torn-safe (a record whose slot or
	 * data did not make it reads as absent), and the next sync writes it all again. The
	 * caller counts the error. */
restore:
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < nr; i++) {
		for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++)
			dirty[i]->ch[k].flags &= (uint8_t)~CH_SYNCING;
		mark_dirty(c, &dirty[i]->ch[0]);
	}
	pthread_mutex_unlock(&c->lock);
out:
	pthread_mutex_unlock(&o->io_lock);
	free(dirty);
	free(recs);
	free(slots);
	return rc;
}

int cache_sync(struct cache *c)
{
	struct cache_object **objs = NULL, *o;
	char what[PATH_MAX] = "";
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

		if ((r == -ENOSPC || r == -EDQUOT) && make_room(c, c->chunk_bytes)) {
			r = obj_sync(c, objs[i]); /* the map's few new blocks fit now */
			if (r == 0)
				disk_full_recovered(c);
		}
		if (r < 0 && rc == 0) {
			rc = r;
			snprintf(what, sizeof(what), "%s", objs[i]->map_path);
		}
		obj_put(objs[i]);
	}
	free(objs);
	/* One error per sync, however many maps it could not write: one full volume is not
	 * DEGRADE_AFTER failures at once. */
	if (rc < 0 && rc != -ENOMEM)
		disk_error(c, rc, "syncing", what);
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
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Removes every object file of the cache (the D/XX folders), leaving D/meta and what is not
 * the cache's (D/listings). */
static void remove_objects(struct cache *c)
{
	for (unsigned b = 0; b < 256; b++) {
		char sub[PATH_MAX], path[PATH_MAX + 300];
		struct dirent *de;
		DIR *d;

		snprintf(sub, sizeof(sub), "%s/%02x", c->dir, b);
		d = opendir(sub);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
			unlink(path);
		}
		closedir(d);
		rmdir(sub);
	}
}

/* Writes D/meta for this cache through a private temporary file; with replace, over an
 * existing one (rename), else only where none is (link: another process's wins). */
static int meta_write(struct cache *c, const char *path, bool replace, char *errbuf, size_t errlen)
{
	char tmp[PATH_MAX], text[128];
	int fd, len, err;

	snprintf(tmp, sizeof(tmp), "%s/" META_NAME ".%d", c->dir, (int)getpid());
	fd = create_private(tmp, O_WRONLY);
	if (fd < 0)
		return errf(errbuf, errlen, fd, "cannot write %s: %s", tmp, strerror(-fd));
	len = snprintf(text, sizeof(text), META_MAGIC "\nchunk_bytes %u\n", c->chunk_bytes);
	errno = 0;
	if (write(fd, text, (size_t)len) != len || fsync(fd) < 0) {
		err = errno ? errno : EIO;
		close(fd);
		unlink(tmp);
		return errf(errbuf, errlen, -err, "cannot write %s: %s", tmp, strerror(err));
	}
	close(fd);
	if (replace ? rename(tmp, path) < 0 : (link(tmp, path) < 0 && errno != EEXIST)) {
		err = errno;
		unlink(tmp);
		return errf(errbuf, errlen, -err, "cannot create %s: %s", path, strerror(err));
	}
	if (!replace)
		unlink(tmp);
	return 0;
}

/* Opens D/meta (ours, and locked) into *fdp; its text into text. */
static int meta_lock(struct cache *c, const char *path, int *fdp, char *text, size_t size,
	char *errbuf, size_t errlen)
{
	struct stat sb;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), err;
	bool locked;

	*fdp = -1;
	if (fd < 0)
		return errf(errbuf, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_uid != c->euid) {
		close(fd);
		return errf(errbuf, errlen, -EPERM,
			"%s is not a regular file owned by this user (uid %u); not using cache %s",
			path, (unsigned)c->euid, c->dir);
	}
	/* umount returns once the kernel lets go, before the daemon has written its maps and
	 * exited: an immediate remount waits for it (flock has no timed form; this is
	 * contention only, and bounded). */
	for (unsigned waited = 0;; waited += 50) {
		locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
		if (locked || errno != EWOULDBLOCK || waited >= c->lock_wait_ms)
			break;
		usleep(50 * 1000);
	}
	if (!locked) {
		err = errno;
		close(fd);
		if (err == EWOULDBLOCK)
			return errf(errbuf, errlen, -EBUSY,
				"cache %s is in use by another ferry process", c->dir);
		return errf(errbuf, errlen, -err, "cannot lock %s: %s", path, strerror(err));
	}
	if ((sb.st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	n = pread(fd, text, size - 1, 0);
	if (n < 0) {
		err = errno;
		close(fd);
		return errf(errbuf, errlen, -err, "cannot read %s: %s", path, strerror(err));
	}
	text[n] = '\0';
	*fdp = fd;
	return 0;
}

/* Removes D/meta.PID files left by a process that stopped while making the meta file. */
static void remove_meta_temps(struct cache *c)
{
	struct dirent *de;
	DIR *d = opendir(c->dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (strncmp(de->d_name, META_NAME ".", strlen(META_NAME) + 1) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
		unlink(path);
	}
	closedir(d);
}

/* Reads or writes D/meta and takes the cache's lock. A format 1 cache is emptied and made
 * again: its maps have no block sums, so none of its bytes could be checked on a read. */
static int meta_open(struct cache *c, char *errbuf, size_t errlen)
{
	char path[PATH_MAX], text[128];
	unsigned long long cb;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/" META_NAME, c->dir);
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		rc = meta_write(c, path, false, errbuf, errlen);
		if (rc < 0)
			return rc;
	}
	rc = meta_lock(c, path, &fd, text, sizeof(text), errbuf, errlen);
	if (rc < 0)
		return rc;
	remove_meta_temps(c);
	if (strncmp(text, META_MAGIC_V1 "\n", strlen(META_MAGIC_V1) + 1) == 0) {
		int old = fd;

		log_warn("cache: %s is a format 1 cache (no block checksums); discarding its "
			 "contents and starting it again as format 2",
			c->dir);
		remove_objects(c);
		rc = meta_write(c, path, true, errbuf, errlen);
		if (rc == 0)
			rc = meta_lock(c, path, &fd, text, sizeof(text), errbuf, errlen);
		close(old);
		if (rc < 0)
			return rc;
	}
	if (sscanf(text, META_MAGIC "\nchunk_bytes %llu\n", &cb) != 1 ||
		strncmp(text, META_MAGIC "\n", strlen(META_MAGIC) + 1) != 0) {
		close(fd);
		return errf(errbuf, errlen, -EINVAL,
			"%s is not a ferry cache (format 2) metadata file", path);
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
 * never synced before the process stopped). Walks the file's data extents only. */
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
			struct chunk *ch = chunk_find(o, i);

			if (ch && ch->state == CH_PRESENT)
				continue;
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    (off_t)(i << c->chunk_shift), (off_t)chunk_len(o, i)) < 0)
				return;
		}
		pos = hole;
	}
}

/* One record read from a map: present when it checks, its slot of sums matches its sum, and
 * memory allows. Single-threaded (cache_open). */
static void load_record(
	struct cache *c, struct cache_object *o, int mfd, uint64_t idx, const struct map_record *r)
{
	uint64_t len = chunk_len(o, idx), one = 0, *sums;
	uint32_t nb = blocks_of(len);
	struct chunk *ch;
	ssize_t n;

	if (!(r->flags & REC_PRESENT) || r->check != record_check(r, idx, o->key_hash) ||
		r->len != len)
		return;
	sums = nb > 1 || c->blocks_per_chunk > 1 ? malloc(nb * sizeof(*sums)) : &one;
	if (!sums)
		return;
	n = c->io->pread(mfd, sums, nb * sizeof(*sums),
		o->sums_off + idx * c->blocks_per_chunk * sizeof(*sums));
	ch = n == (ssize_t)(nb * sizeof(*sums)) && XXH3_64bits(sums, nb * sizeof(*sums)) == r->sum
		     ? chunk_get(o, idx)
		     : NULL;
	if (!ch) {
		if (sums != &one)
			free(sums);
		return;
	}
	ch->state = CH_PRESENT;
	ch->flags = CH_DURABLE;
	if (c->blocks_per_chunk > 1)
		ch->sums.many = sums;
	else
		ch->sums.one = one;
	ch->stamp = r->stamp;
	o->cached_bytes += len;
}

/* Reads the records of a map: only its data extents (SEEK_DATA), so a map of an object that
 * claims petabytes but holds a few chunks costs a few reads. */
static int load_records(struct cache *c, struct cache_object *o, int mfd)
{
	uint64_t start = o->records_off, end = start + o->nr_chunks * MAP_RECORD_BYTES, pos;
	struct map_record *recs = malloc(LOAD_RECORDS * sizeof(*recs));

	if (!recs)
		return -ENOMEM;
	for (pos = start; pos < end;) {
		off_t data = lseek(mfd, (off_t)pos, SEEK_DATA), hole;
		uint64_t i;

		if (data < 0 && errno == ENXIO)
			break; /* no more data: the rest is absent */
		if (data < 0)
			data = (off_t)pos; /* no SEEK_DATA here: read it all */
		if ((uint64_t)data >= end)
			break;
		hole = lseek(mfd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > end)
			hole = (off_t)end;
		for (i = ((uint64_t)data - start) / MAP_RECORD_BYTES;
			start + i * MAP_RECORD_BYTES < (uint64_t)hole;) {
			uint64_t want = min_u64(LOAD_RECORDS, o->nr_chunks - i);
			ssize_t n = c->io->pread(
				mfd, recs, want * sizeof(*recs), start + i * MAP_RECORD_BYTES);

			if (n < (ssize_t)sizeof(*recs))
				goto out; /* a short map (torn extension): the rest is absent */
			for (uint64_t k = 0; k < (uint64_t)n / sizeof(*recs); k++)
				load_record(c, o, mfd, i + k, &recs[k]);
			i += (uint64_t)n / sizeof(*recs);
		}
		pos = start + i * MAP_RECORD_BYTES;
	}
out:
	free(recs);
	return 0;
}

/* Opens one of an object's files as found on disk: a regular file owned by this user, made
 * private if it was not. -errno and a reason. */
static int open_own(struct cache *c, const char *path, int flags, struct stat *sb, const char **why)
{
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		*why = errno == ELOOP ? "a symbolic link" : "cannot open";
		return -errno;
	}
	if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
		*why = "not a regular file";
		close(fd);
		return -EINVAL;
	}
	if (sb->st_uid != c->euid) {
		*why = "not owned by this user";
		close(fd);
		return -EPERM;
	}
	if ((sb->st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	return fd;
}

/* Loads one map file left by an earlier run; a map (or its data file) that does not parse
 * or is not ours is removed with its data file (the cache is only a cache). Returns the
 * object, not yet in any table. */
static struct cache_object *map_load(struct cache *c, const char *map_path)
{
	struct map_header h;
	struct cache_object *o = NULL;
	char *path = NULL, *version = NULL, *data_path = NULL;
	const char *why = NULL;
	struct stat sb;
	int mfd = -1, dfd = -1;
	ssize_t n;

	if (asprintf(&data_path, "%.*s.data", (int)(strlen(map_path) - 4), map_path) < 0)
		return NULL;
	mfd = open_own(c, map_path, O_RDONLY, &sb, &why);
	if (mfd < 0)
		goto bad;
	n = c->io->pread(mfd, &h, sizeof(h), 0);
	if (n != (ssize_t)sizeof(h) || memcmp(h.magic, MAP_MAGIC, 8) != 0 ||
		h.format != MAP_FORMAT) {
		why = "not a format 2 map";
		goto bad;
	}
	if (h.chunk_bytes != c->chunk_bytes || h.path_bytes > MAX_PATH_BYTES ||
		h.version_bytes > MAX_VERSION_BYTES || h.object_size > MAX_OBJECT_BYTES ||
		h.nr_chunks != (h.object_size + c->chunk_bytes - 1) >> c->chunk_shift ||
		h.records_off < MAP_HEADER_BYTES + h.path_bytes + h.version_bytes || h.zero) {
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
	dfd = open_own(c, data_path, O_RDWR, &sb, &why);
	if (dfd < 0) {
		if (why && !strcmp(why, "cannot open"))
			why = "data file missing";
		goto bad;
	}
	if ((uint64_t)sb.st_size != o->size) {
		why = "data file has the wrong size";
		goto bad;
	}
	if (load_records(c, o, mfd) < 0)
		goto bad;
	obj_reclaim_orphans(c, o, dfd);
	o->data_exists = o->map_exists = true;
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
	free(path);
	free(version);
	free(data_path);
	return o;
}

static uint64_t obj_max_stamp(const struct cache_object *o)
{
	uint64_t m = 0;

	for (const struct chunk_page *p = o->pages; p; p = p->next)
		for (unsigned k = 0; k < page_nr_chunks(o, p); k++)
			if (p->ch[k].state == CH_PRESENT && p->ch[k].stamp > m)
				m = p->ch[k].stamp;
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

static bool is_hex16(const char *s)
{
	for (int i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Loads the maps of one D/XX folder. */
static void load_dir(struct cache *c, const char *sub)
{
	struct dirent *de;
	DIR *d = opendir(sub);

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char path[PATH_MAX + 300];
		struct cache_object *o;

		if (len < 16 + 4 || !is_hex16(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
		if (!strcmp(de->d_name + 16, ".map.tmp")) {
			unlink(path); /* a map being made when the process stopped */
			continue;
		}
		if (!strcmp(de->d_name + 16, ".data")) {
			/* a data file whose map is gone (removed mid-way, or never synced) */
			char map[PATH_MAX + 300];

			snprintf(map, sizeof(map), "%.*s.map", (int)(strlen(path) - 5), path);
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

/* Loads every map under D/XX/ (removing those of objects with no chunk left), then rebuilds
 * the LRU order from the stamps. */
static int cache_load(struct cache *c)
{
	struct chunk **present = NULL;
	size_t nr_present = 0, cap = 0;

	for (unsigned b = 0; b < 256; b++) {
		char sub[PATH_MAX];
		int rc;

		snprintf(sub, sizeof(sub), "%s/%02x", c->dir, b);
		rc = dir_check_private(c, sub);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			/* Only root can make one in our private D: nothing in it is used. */
			log_warn("cache: ignoring %s: not a private folder of this user", sub);
			continue;
		}
		load_dir(c, sub);
	}
	for (struct cache_object *o = c->all; o; o = o->all_next) {
		for (struct chunk_page *p = o->pages; p; p = p->next) {
			for (unsigned k = 0; k < page_nr_chunks(o, p); k++) {
				struct chunk *ch = &p->ch[k];

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
				c->st.used_bytes += chunk_len(o, p->first + k);
				c->st.nr_chunks++;
				if (ch->stamp > c->clock)
					c->clock = ch->stamp;
			}
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
	struct stat sb;
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
	pthread_cond_init(&c->dead_cond, NULL);
	c->lru.lru_next = c->lru.lru_prev = &c->lru;
	c->chunk_bytes = cfg->chunk_bytes;
	c->chunk_shift = (uint32_t)__builtin_ctz(cfg->chunk_bytes);
	c->blocks_per_chunk = cfg->chunk_bytes >> BLOCK_SHIFT;
	c->max_bytes = cfg->max_bytes;
	c->st.max_bytes = cfg->max_bytes;
	c->lock_wait_ms = cfg->lock_wait_ms;
	c->io = cfg->io ? cfg->io : io_default();
	c->euid = geteuid();
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
	/* Private to this user: another user's folder is refused, ours is made 0700. */
	if (lstat(c->dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		rc = errf(
			errbuf, errlen, -ENOTDIR, "cache directory %s is not a directory", c->dir);
		goto fail;
	}
	if (sb.st_uid != c->euid) {
		rc = errf(errbuf, errlen, -EPERM,
			"cache directory %s is owned by uid %u, not by this user (uid %u); "
			"refusing to use it",
			c->dir, (unsigned)sb.st_uid, (unsigned)c->euid);
		goto fail;
	}
	if ((sb.st_mode & 07777) != 0700 && chmod(c->dir, 0700) < 0) {
		rc = errf(errbuf, errlen, -errno, "cannot make cache directory %s private: %s",
			c->dir, strerror(errno));
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
	victims = pick_victims(c, 0);
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
		for (struct chunk_page *p = o->pages; p; p = p->next) {
			for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++) {
				struct flight *f = p->ch[k].flight;

				if (!f)
					continue;
				/* a caller still fetching at free: a bug on their side; do not
				 * leave waiters asleep on freed memory */
				p->ch[k].flight = NULL;
				f->done = true;
				f->result = -ESHUTDOWN;
				pthread_cond_broadcast(&f->cond);
				flight_unref(f);
			}
		}
		obj_destroy(o);
	}
	if (c->meta_fd >= 0)
		close(c->meta_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->dead_cond);
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
