/* The chunk cache on local disk: one sparse data file per object version (offset in file =
 * offset in object) and a map of the chunks present with an XXH3 checksum each. It is also
 * the single-flight point of the fetch engine: each absent chunk has at most one fetcher,
 * and readers of a chunk being fetched wait for it. */
#ifndef FERRY_CACHE_H
#define FERRY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct io_backend;
struct cache;
struct cache_object;

struct cache_config {
	const char *dir;              /* this source's directory; created if missing */
	uint64_t max_bytes;           /* limit on bytes of present chunks; 0: no limit */
	uint32_t chunk_bytes;         /* a power of two, 64 KiB .. 64 MiB */
	const struct io_backend *io;  /* NULL: io_default() */
};

struct cache_stats {
	uint64_t used_bytes;          /* bytes of present chunks, all objects, and of fills
	                               * in progress */
	uint64_t max_bytes;
	uint64_t nr_objects;
	uint64_t nr_chunks;           /* present */
	uint64_t hits, misses;        /* chunk acquisitions */
	uint64_t evictions;           /* chunks evicted */
	uint64_t verify_failures;     /* chunks whose checksum failed after a restart */
};

/* Opens (or creates) the cache in cfg->dir and loads the maps left by earlier runs. A cache
 * made with another chunk size is refused (-EINVAL), as is a cache another process has open
 * (-EBUSY). -errno, with a one-line reason in errbuf. Chunks over max_bytes are evicted. */
int cache_open(struct cache **out, const struct cache_config *cfg, char *errbuf, size_t errlen);
/* Does not sync: chunks filled since the last cache_sync are absent after a reopen. */
void cache_free(struct cache *c);
uint32_t cache_chunk_bytes(const struct cache *c);
void cache_get_stats(struct cache *c, struct cache_stats *st);

/* An object version is named by (path, size, version); version is the ETag, or the mtime
 * written as text when the store has no ETag. Another version of the same path is another
 * object; the old one's chunks are evicted first. Returns a reference. */
int cache_object_open(struct cache *c, const char *path, uint64_t size, const char *version,
	struct cache_object **out);
struct cache_object *cache_object_ref(struct cache_object *o);
void cache_object_unref(struct cache_object *o);
uint64_t cache_object_size(const struct cache_object *o);
uint64_t cache_object_nr_chunks(const struct cache_object *o);
/* Bytes of this object present in the cache. */
uint64_t cache_object_cached_bytes(struct cache_object *o);
/* The sparse data file (for the loader's direct reads of resident, pinned ranges). */
const char *cache_object_data_path(const struct cache_object *o);

enum { CACHE_HIT = 0, CACHE_FETCH = 1 };

/* Takes chunk idx for reading.
 * CACHE_HIT: present (verified against its checksum once after a restart) and pinned: it is
 *   not evicted until cache_chunk_release.
 * CACHE_FETCH: absent; the caller is now its one fetcher and must call cache_chunk_fill or
 *   cache_chunk_fail.
 * While another thread fetches it: waits when wait is true, else returns -EAGAIN. A waiter
 * whose fetcher failed gets the fetcher's error. */
int cache_chunk_acquire(struct cache_object *o, uint64_t idx, bool wait);
/* Fetcher only: stores the chunk's bytes (chunk_bytes, shorter for the last chunk), makes it
 * visible once written, and wakes the waiters. The caller keeps it pinned, as on a hit. May
 * evict least-recently used unpinned chunks first. On failure (-ENOSPC, -EIO) the chunk stays
 * absent and the waiters retry as fetchers; the caller still owns its buffer. -ENOSPC also
 * when pinned chunks and other fills in progress leave no room within one chunk over
 * max_bytes. -EINVAL (nothing changes) when the caller is not the fetcher or len is wrong. */
int cache_chunk_fill(struct cache_object *o, uint64_t idx, const void *buf, size_t len);
/* Fetcher only: the fetch failed with err (-errno); waiters get err. */
void cache_chunk_fail(struct cache_object *o, uint64_t idx, int err);
void cache_chunk_release(struct cache_object *o, uint64_t idx);
/* Reads bytes of pinned chunks; returns bytes read or -errno. */
ssize_t cache_object_read(struct cache_object *o, void *buf, size_t len, uint64_t off);

/* Makes the maps of chunks written so far durable (the daemon calls it now and then and at
 * unmount; chunks are durable in the map only after their data is). */
int cache_sync(struct cache *c);

#endif
