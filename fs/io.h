/* Disk I/O of the chunk cache: one table of blocking calls, filled by io_uring.c (liburing,
 * one ring per calling thread) or io_sync.c (plain pread/pwrite, the oracle in tests). */
#ifndef FERRY_IO_H
#define FERRY_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Every call blocks until done and may be made from any thread at once. */
struct io_backend {
	const char *name;
	/* Reads up to len bytes at off; returns bytes read (short only at end of file) or -errno. */
	ssize_t (*pread)(int fd, void *buf, size_t len, uint64_t off);
	/* Writes all len bytes at off; returns len or -errno (never a short write). */
	ssize_t (*pwrite)(int fd, const void *buf, size_t len, uint64_t off);
	/* Makes written data durable; 0 or -errno. */
	int (*fdatasync)(int fd);
};

extern const struct io_backend io_sync_backend;
#if HAVE_IO_URING
extern const struct io_backend io_uring_backend;
#endif

/* io_uring when built in and the kernel allows it (probed once), else the sync twin.
 * FERRY_IO=sync in the environment forces the twin. */
const struct io_backend *io_default(void);

#endif
