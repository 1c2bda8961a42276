/* Private to the chunk cache: its structs, their locks and invariants, and the helpers that
 * cache.c (chunk states, LRU, eviction) and cache_disk.c (files, sync, load) share. */
#ifndef FERRY_CACHE_I_H
#define FERRY_CACHE_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "fs/cache.h"
#include "fs/remote/remote.h"

#define META_NAME         "meta"
#define META_MAGIC        "ferry-cache 2"
#define META_MAGIC_V1     "ferry-cache 1"
#define MAP_MAGIC         "FERRYMAP"
#define MAP_FORMAT        2
#define MAP_HEADER_BYTES  64
#define MAP_RECORD_BYTES  32
#define MAP_ALIGN         512
#define MAP_SUMS_ALIGN    512
#define REC_PRESENT       1u
#define MAX_PATH_BYTES    16384
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
	bool dirty;     /* records to rewrite at the next sync */
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
	struct cache_object *hash_next;           /* c->table bucket, keyed by path */
	struct cache_object *all_prev, *all_next; /* c->all, every object until freed */
	struct cache_object *stale_next;          /* c->stale, while stale */
	struct cache_object *dirty_next;          /* c->dirty, when on_dirty */
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
	struct chunk lru;           /* list head: lru.lru_next is the least recently used */
	uint64_t clock;
	unsigned fail_run;     /* disk errors since the last successful fill */
	time_t last_err_log;   /* rate limit of disk error lines: one a second */
	struct cache_stats st; /* used_bytes also counts fills in progress */
};

/* ---- small helpers ---- */

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t chunk_len(const struct cache_object *o, uint64_t idx)
{
	uint64_t cb = o->cache->chunk_bytes, off = idx * cb;

	return o->size - off < cb ? o->size - off : cb;
}

static inline uint64_t blocks_of(uint64_t len)
{
	return (len >> BLOCK_SHIFT) + ((len & (CACHE_BLOCK_BYTES - 1)) != 0);
}

static inline uint64_t *chunk_sums(const struct cache *c, struct chunk *ch)
{
	return c->blocks_per_chunk == 1 ? &ch->sums.one : ch->sums.many;
}

/* ---- defined in cache.c ---- */

void cache_disk_error(struct cache *c, int err, const char *what, const char *path);
void cache_disk_full_recovered(struct cache *c);
bool cache_degraded(struct cache *c);
struct chunk *cache_chunk_find(struct cache_object *o, uint64_t idx);
struct chunk *cache_chunk_get(struct cache_object *o, uint64_t idx);
unsigned cache_page_nr_chunks(const struct cache_object *o, const struct chunk_page *p);
void cache_lru_append(struct cache *c, struct chunk *ch);
void cache_flight_unref(struct flight *f);
void cache_obj_mark_dirty(struct cache *c, struct cache_object *o);
void cache_mark_dirty(struct cache *c, struct chunk *ch);
struct cache_object **cache_table_slot(struct cache *c, const char *path);
void cache_table_insert(struct cache *c, struct cache_object *o);
void cache_table_remove(struct cache *c, struct cache_object *o);
void cache_all_insert(struct cache *c, struct cache_object *o);
void cache_obj_destroy(struct cache_object *o);
struct cache_object *cache_obj_new(struct cache *c, const char *path, const char *version,
	uint64_t size, uint64_t key_hash);
void cache_obj_ref_locked(struct cache_object *o);
void cache_obj_put(struct cache_object *o);
struct chunk *cache_pick_victims(struct cache *c, uint64_t need);
void cache_evict_victims(struct cache *c, struct chunk *victims);
bool cache_make_room(struct cache *c, uint64_t need);

/* ---- defined in cache_disk.c ---- */

uint64_t cache_key_hash_of(const char *path, const char *version, uint64_t size);
void cache_punch(int fd, uint64_t off, uint64_t len);
int cache_obj_open_data_locked(struct cache_object *o, bool create);
int cache_obj_open_data(struct cache_object *o);
int cache_obj_open_map(struct cache_object *o, bool create);

#endif
