/* The control surface of a mounted ferry file system, for programs that hold no link to the
 * daemon: `ferry stat`, `ferry warm` and loader/. Extended attributes and two ioctls, all
 * carried by FUSE, so nothing but the mount itself is needed. */
#ifndef FERRY_CTL_H
#define FERRY_CTL_H

#include <stdint.h>
#include <sys/ioctl.h>

/* On the mount root: a JSON object of the daemon's counters (see docs/ferry.md). */
#define FERRY_XATTR_STATS "user.ferry.stats"
/* On any file or directory: the remote URL it comes from. Present on ferry mounts only. */
#define FERRY_XATTR_SOURCE "user.ferry.source"
/* On files: the object's ETag (as sent by the server) or "" when it has none. */
#define FERRY_XATTR_ETAG "user.ferry.etag"
/* On files: bytes of the file present in the cache, as decimal text. */
#define FERRY_XATTR_CACHED "user.ferry.cached"

/* FERRY_IOC_RESIDENT: makes [offset, offset + length) of the open file resident in the cache
 * (fetching what is absent) and keeps those chunks from eviction for hold_ms milliseconds,
 * then answers with the path of the backing cache file, in which offset in file = offset in
 * object, and with the checksums of the blocks covering the range, taken while the daemon
 * held the chunks. The caller may then read that range of the cache file directly (O_DIRECT
 * works) and must check what it read against the sums: a file on disk can be damaged, or a
 * chunk dropped once its hold has expired (its bytes then read as zeros), and only the sums
 * tell. Where a block does not verify, or has no sum, read it through the mount, which
 * checks and fetches again. Fails with EIO when the range cannot be fetched.
 *
 * Block sums: XXH3_64bits (seed 0) of each FERRY_RESIDENT_BLOCK_BYTES block of the object,
 * offset-aligned (the object's last block may be short). sums[i] is the block at
 * sums_offset + i * block_bytes, where sums_offset is offset rounded down to a block; at most
 * FERRY_RESIDENT_MAX_SUMS are answered (64 MiB of blocks), fewer when the range is shorter or
 * the cache could not give them (nr_sums 0). block_bytes 0: this daemon gives no sums.
 *
 * The struct's size is part of the request number (_IOWR), so a loader built against the
 * struct without sums meets ENOTTY here, and falls back to reading through the mount. */
#define FERRY_RESIDENT_BLOCK_BYTES (64u << 10)
#define FERRY_RESIDENT_MAX_SUMS    1024u

struct ferry_resident {
	uint64_t offset;       /* in */
	uint64_t length;       /* in; clipped to the file's size */
	uint32_t hold_ms;      /* in: pin time; 0 means 30 s */
	uint32_t chunk_bytes;  /* out: the cache's chunk size */
	uint64_t file_size;    /* out */
	char cache_path[4064]; /* out: NUL-terminated absolute path */
	uint64_t sums_offset;  /* out: the block of sums[0] */
	uint32_t block_bytes;  /* out: FERRY_RESIDENT_BLOCK_BYTES, or 0 (no sums) */
	uint32_t nr_sums;      /* out */
	uint64_t sums[FERRY_RESIDENT_MAX_SUMS]; /* out */
};
#define FERRY_IOC_RESIDENT _IOWR('f', 1, struct ferry_resident)
/* _IOC_SIZE holds 14 bits. */
_Static_assert(sizeof(struct ferry_resident) < (1u << 14), "FERRY_IOC_RESIDENT too large");

/* FERRY_IOC_PREFETCH: the caller's next reads of the open file, in the order it will need
 * them: the daemon starts fetching the absent chunks covering ranges[0], then ranges[1], ...
 * in the background (the same readahead as a sequential reader's, so at most 128 MiB of it in
 * memory at once), and answers at once, never waiting for the network. Where that bound
 * stopped it, nr_done < nr_ranges and next_offset is the first byte of ranges[nr_done] it did
 * not go through (a chunk boundary): the caller asks again from there later, as chunks land
 * and free the bound. "Gone through" means started, already present, or already being
 * fetched; nothing is pinned, so a chunk fetched ahead can still be evicted before it is
 * read (the caller keeps what it asks for well under cache_max_bytes).
 *
 * Every range must lie inside the file and be non-empty; more than FERRY_PREFETCH_MAX_RANGES,
 * flags other than 0, a zero length, an offset + length that wraps or passes the file's end:
 * EINVAL, and nothing is started. nr_ranges 0 only answers the out fields. Only the fields
 * before ranges[] are written back. docs/ferry.md ("Prefetch from the training order"). */
#define FERRY_PREFETCH_MAX_RANGES 1000u

struct ferry_prefetch_range {
	uint64_t offset;
	uint64_t length;
};

struct ferry_prefetch {
	uint32_t nr_ranges;       /* in: 0 .. FERRY_PREFETCH_MAX_RANGES */
	uint32_t flags;           /* in: 0 */
	uint32_t nr_done;         /* out: ranges gone through whole */
	uint32_t chunk_bytes;     /* out: the cache's chunk size */
	uint64_t next_offset;     /* out: in ranges[nr_done] when nr_done < nr_ranges */
	uint64_t file_size;       /* out */
	uint64_t cache_max_bytes; /* out: the cache's size limit (0: none) */
	uint32_t nr_started;      /* out: chunk fetches this call started */
	uint32_t nr_chunks;       /* out: chunks this call went through */
	struct ferry_prefetch_range ranges[FERRY_PREFETCH_MAX_RANGES]; /* in */
};
#define FERRY_IOC_PREFETCH _IOWR('f', 2, struct ferry_prefetch)
_Static_assert(sizeof(struct ferry_prefetch) < (1u << 14), "FERRY_IOC_PREFETCH too large");

#endif
