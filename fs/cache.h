/* The chunk cache on local disk: one sparse data file per object version (offset in file =
 * offset in object) and a map of the chunks present with an XXH3 checksum per 64 KiB block,
 * checked on every read. It is also the single-flight point of the fetch engine: each absent
 * chunk has at most one fetcher, and readers of a chunk being fetched wait for it on its
 * in-flight record, which also holds the fetcher's buffer once the bytes have arrived. */
#ifndef FERRY_CACHE_H
#define FERRY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The unit of checksumming: every present chunk carries one XXH3_64bits (seed 0) per block
 * of the object, offset-aligned (the object's last block may be short). Chunks are a whole
 * number of blocks. */
#define CACHE_BLOCK_BYTES (64u << 10)

struct io_backend;
struct remote_object;
struct cache;
struct cache_object;

struct cache_config {
	const char *dir;             /* this source's directory; created if missing */
	uint64_t max_bytes;          /* limit on bytes of present chunks; 0: no limit */
	uint32_t chunk_bytes;        /* a power of two, 64 KiB .. 64 MiB */
	const struct io_backend *io; /* NULL: io_default() */
	unsigned lock_wait_ms;       /* a cache another process holds: wait this long for it
	                               * (a daemon just unmounted still writing its maps) */
};

struct cache_stats {
	uint64_t used_bytes; /* bytes of present chunks, all objects, and of fills
	                               * in progress */
	uint64_t max_bytes;
	uint64_t nr_objects;
	uint64_t nr_chunks;       /* present */
	uint64_t hits, misses;    /* chunk acquisitions */
	uint64_t evictions;       /* chunks evicted */
	uint64_t verify_failures; /* chunks dropped because a block failed its checksum or
	                               * could not be read from disk */
	uint64_t disk_errors;     /* failed reads, writes, syncs and file creations on the
	                               * cache volume (ENOSPC, EIO, ...), also those that
	                               * eviction then made room for */
	bool degraded;            /* the volume kept failing: nothing more is stored until
	                               * restart, reads of absent chunks go to the network */
};

/* Opens (or creates) the cache in cfg->dir and loads the maps left by earlier runs. The
 * directory is made private (0700, files 0600, whatever the umask). A cache made with another
 * chunk size is refused (-EINVAL), as is a cache another process has open (-EBUSY) and a
 * directory owned by another user (-EPERM). A cache of an older format is emptied and made
 * again (one log line). Maps or data files that do not parse or are not owned by this user
 * are removed, never served. -errno, with a one-line reason in errbuf. Chunks over max_bytes
 * are evicted. */
int cache_open(struct cache **out, const struct cache_config *cfg, char *errbuf, size_t errlen);
/* Does not sync: chunks filled since the last cache_sync are absent after a reopen. */
void cache_free(struct cache *c);
uint32_t cache_chunk_bytes(const struct cache *c);
void cache_get_stats(struct cache *c, struct cache_stats *st);

/* An object version is named by (obj->path, obj->size, version); version is the ETag, or the
 * mtime written as text when the store has no ETag. The object keeps obj's remote identity
 * (path, size, etag, mtime: copied) for the fetcher, which needs no other handle; an object
 * already open keeps the identity it was first opened with (the key decides it). Another
 * version of the same path is another object; the old one's chunks are evicted first.
 * Returns a reference. Never fails because
 * the cache volume is full or failing: the object then has no files, its chunks are fetched
 * (acquire gives CACHE_FETCH) and not stored (fill fails; it tries to make the files again).
 * Fails only with -ENOMEM, -EINVAL, -ENAMETOOLONG or -EFBIG (size over 2^63). Memory is in
 * proportion to the chunks touched, not to size. */
int cache_object_open(struct cache *c, const struct remote_object *obj, const char *version,
	struct cache_object **out);
/* The remote identity the object was opened with; valid while the caller holds a reference. */
const struct remote_object *cache_object_remote(const struct cache_object *o);
struct cache_object *cache_object_ref(struct cache_object *o);
void cache_object_unref(struct cache_object *o);
uint64_t cache_object_size(const struct cache_object *o);
uint64_t cache_object_nr_chunks(const struct cache_object *o);
/* Bytes of this object present in the cache. */
uint64_t cache_object_cached_bytes(struct cache_object *o);
/* The sparse data file (for the loader's direct reads of resident, pinned ranges, checked
 * against cache_object_block_sums). It may not exist (see cache_object_open). */
const char *cache_object_data_path(const struct cache_object *o);

enum { CACHE_HIT = 0, CACHE_FETCH = 1, CACHE_COPIED = 2 };

/* Takes chunk idx for reading.
 * CACHE_HIT: present and pinned: it is not evicted until cache_chunk_release (it can still be
 *   dropped by a read that finds it damaged, see cache_object_read).
 * CACHE_FETCH: absent; the caller is now its one fetcher and must call cache_chunk_fill or
 *   cache_chunk_fail.
 * While another thread fetches it: waits when wait is true, else returns -EAGAIN. A waiter
 * whose fetcher failed gets the fetcher's error. */
int cache_chunk_acquire(struct cache_object *o, uint64_t idx, bool wait);
/* Pins chunk idx only if it is present (0, as CACHE_HIT but not counted as a hit), else
 * -ENOENT (absent, being fetched or evicted): for a reader of what is kept that never fetches. */
int cache_chunk_pin(struct cache_object *o, uint64_t idx);
/* cache_chunk_acquire(o, idx, true) for a reader that can take bytes in memory: while another
 * thread fetches the chunk and its bytes have landed (cache_chunk_land, or a fill in progress),
 * copies [off, off + len) (within chunk idx) from the fetcher's buffer into dst and returns
 * CACHE_COPIED, nothing pinned. Those bytes passed the fetch's response checks (status, range,
 * version, length); they are not read back from disk. Otherwise as cache_chunk_acquire. */
int cache_chunk_acquire_copy(struct cache_object *o, uint64_t idx, void *dst, uint64_t off,
	size_t len);
/* Fetcher only: buf holds the chunk's bytes (len as for fill), checked by the fetch; waiters
 * of cache_chunk_acquire_copy are served from it until the chunk is filled. The cache does not
 * copy buf: it must stay valid and unchanged until cache_chunk_fill or cache_chunk_fail
 * returns, which take it back and wait for the last copier first; the fetcher then frees or
 * reuses it. A fill passes its own buf the same way (with no land before it). The cache cannot
 * tell the fetcher from another caller: while the chunk is being fetched the first buf landed
 * is the one served. -EINVAL when the chunk is not being fetched or len is wrong. */
int cache_chunk_land(struct cache_object *o, uint64_t idx, const void *buf, size_t len);
/* Fetcher only: stores the chunk's bytes (chunk_bytes, shorter for the last chunk) with their
 * block checksums, makes it visible once written, and wakes the waiters; while it writes,
 * waiters copy from buf (see cache_chunk_land). The caller keeps it pinned, as on a hit. May
 * evict least-recently used unpinned chunks first; a write that finds the volume full evicts
 * them and tries once more. On failure the chunk stays absent and the waiters that had not
 * copied it retry as fetchers; the caller still owns its buffer and may serve it:
 * -ENOSPC, -EIO (disk errors, counted), -ENOSPC also when pinned chunks and other fills in
 * progress leave no room within one chunk over max_bytes, -EROFS when the cache is degraded
 * (no write attempted: the caller need not log it), -ENOMEM. -EINVAL (nothing changes) when
 * the caller is not the fetcher or len is wrong. */
int cache_chunk_fill(struct cache_object *o, uint64_t idx, const void *buf, size_t len);
/* Fetcher only: the fetch failed with err (-errno); waiters get err. */
void cache_chunk_fail(struct cache_object *o, uint64_t idx, int err);
void cache_chunk_release(struct cache_object *o, uint64_t idx);
/* Reads bytes of pinned chunks, checking every 64 KiB block it reads against its checksum;
 * returns bytes read (short only at the end of the object) or -errno. -EBADMSG: a block did
 * not verify or could not be read (the chunk is now absent: counted in verify_failures, hole
 * punched, record cleared) or a chunk of the range is not present; the caller releases its
 * pins and acquires again, which gives CACHE_FETCH. No unverified byte is left in buf (what
 * was read straight into buf before a failed check is zeroed). No allocation per call (a
 * 64 KiB buffer per calling thread, made once, takes unaligned edges). */
ssize_t cache_object_read(struct cache_object *o, void *buf, size_t len, uint64_t off);
/* Asks the kernel to read chunk idx of o's data file into the page cache (POSIX_FADV_WILLNEED),
 * when the chunk is present; nothing else. A hint for a sequential reader's next chunks: what it
 * reads later is still checked block by block by cache_object_read. It blocks while the disk
 * reads are queued (milliseconds for a chunk), so it is for background threads, never a
 * reader's. The caller holds a reference on o. */
void cache_object_readahead(struct cache_object *o, uint64_t idx);
/* The checksums of the blocks covering [off, off + len) (clipped to the object), at most
 * max_sums of them, into sums; returns how many, or -errno: -EINVAL when off is not a multiple
 * of CACHE_BLOCK_BYTES or a chunk of the range is not present. The caller pins the chunks
 * (the sums stay right while pinned; a damaged chunk is dropped, not rewritten). */
int cache_object_block_sums(struct cache_object *o, uint64_t off, uint64_t len, uint64_t *sums,
	size_t max_sums);

/* Makes the maps of chunks written so far durable (the daemon calls it now and then and at
 * unmount; chunks are durable in the map only after their data is). A failed write (full or
 * failing volume) is counted, changes nothing on disk that a reopen would trust, and is
 * retried by the next sync; returns its -errno. */
int cache_sync(struct cache *c);

#endif
