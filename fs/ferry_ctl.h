/* The control surface of a mounted ferry file system, for programs that hold no link to the
 * daemon: `ferry stat`, `ferry warm` and loader/. Extended attributes and one ioctl, both
 * carried by FUSE, so nothing but the mount itself is needed. */
#ifndef FERRY_CTL_H
#define FERRY_CTL_H

#include <stdint.h>
#include <sys/ioctl.h>

/* On the mount root: a JSON object of the daemon's counters (see docs/ferry.md). */
#define FERRY_XATTR_STATS  "user.ferry.stats"
/* On any file or directory: the remote URL it comes from. Present on ferry mounts only. */
#define FERRY_XATTR_SOURCE "user.ferry.source"
/* On files: the object's ETag (as sent by the server) or "" when it has none. */
#define FERRY_XATTR_ETAG   "user.ferry.etag"
/* On files: bytes of the file present in the cache, as decimal text. */
#define FERRY_XATTR_CACHED "user.ferry.cached"

/* FERRY_IOC_RESIDENT: makes [offset, offset + length) of the open file resident in the cache
 * (fetching what is absent) and keeps those chunks from eviction for hold_ms milliseconds,
 * then answers with the path of the backing cache file, in which offset in file = offset in
 * object. The caller may then read that range of the cache file directly (O_DIRECT works).
 * Fails with EIO when the range cannot be fetched. */
struct ferry_resident {
	uint64_t offset;        /* in */
	uint64_t length;        /* in; clipped to the file's size */
	uint32_t hold_ms;       /* in: pin time; 0 means 30 s */
	uint32_t chunk_bytes;   /* out: the cache's chunk size */
	uint64_t file_size;     /* out */
	char cache_path[4064];  /* out: NUL-terminated absolute path */
};
#define FERRY_IOC_RESIDENT _IOWR('f', 1, struct ferry_resident)

#endif
