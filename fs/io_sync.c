/* The synchronous twin of the cache's disk I/O: plain pread/pwrite/fdatasync, looping over
 * short transfers. The fallback where io_uring is missing, and the oracle in tests. */
#include "config.h"

#include <errno.h>
#include <unistd.h>

#include "fs/io.h"

static ssize_t sync_pread(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break; /* end of file */
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t sync_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* no progress: never report a short write */
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int sync_fdatasync(int fd)
{
	while (fdatasync(fd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

const struct io_backend io_sync_backend = {
	.name = "sync",
	.pread = sync_pread,
	.pwrite = sync_pwrite,
	.fdatasync = sync_fdatasync,
};

#if !HAVE_IO_URING
/* Without liburing the twin is the only backend; io_uring.c provides io_default otherwise. */
const struct io_backend *io_default(void)
{
	return &io_sync_backend;
}
#endif
