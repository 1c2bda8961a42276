/* The cache's disk I/O through io_uring (liburing): one small ring per calling thread, each
 * call submitted and waited for, so callers keep the simple blocking contract of io.h. */
#include "config.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fs/io.h"
#include "fs/log.h"

/* Calls are blocking and one at a time per thread, so a ring needs only a few entries. The
 * ring is per thread (no lock around submission) and freed by the key's destructor when
 * the thread exits. Reads and writes are split into pieces of at most IO_MAX_BYTES because
 * an SQE's length is 32 bits. */
enum { RING_ENTRIES = 4 };
#define IO_MAX_BYTES (1u << 30)

static pthread_key_t ring_key;
static pthread_once_t ring_key_once = PTHREAD_ONCE_INIT;
static __thread struct io_uring *thread_ring;

static void ring_destroy(void *p)
{
	struct io_uring *ring = p;

	io_uring_queue_exit(ring);
	free(ring);
}

static void ring_key_create(void)
{
	if (pthread_key_create(&ring_key, ring_destroy) != 0)
		abort(); /* only fails when the process is out of keys: a build-time bug */
}

/* The calling thread's ring, created on first use; NULL with *err set when the kernel
 * refuses (io_uring disabled by sysctl or seccomp, out of memory). */
static struct io_uring *ring_get(int *err)
{
	struct io_uring *ring = thread_ring;
	int rc;

	if (ring)
		return ring;
	pthread_once(&ring_key_once, ring_key_create);
	ring = calloc(1, sizeof(*ring));
	if (!ring) {
		*err = -ENOMEM;
		return NULL;
	}
	/* SINGLE_ISSUER lets the kernel skip submission locking; older kernels refuse it. */
	rc = io_uring_queue_init(RING_ENTRIES, ring, IORING_SETUP_SINGLE_ISSUER);
	if (rc == -EINVAL)
		rc = io_uring_queue_init(RING_ENTRIES, ring, 0);
	if (rc < 0) {
		free(ring);
		*err = rc;
		return NULL;
	}
	if (pthread_setspecific(ring_key, ring) != 0) {
		ring_destroy(ring);
		*err = -ENOMEM;
		return NULL;
	}
	thread_ring = ring;
	return ring;
}

/* Submits the one prepared SQE and returns its result (bytes or -errno). */
static int ring_run(struct io_uring *ring)
{
	struct io_uring_cqe *cqe;
	int rc, res;

	do
		rc = io_uring_submit_and_wait(ring, 1);
	while (rc == -EINTR);
	if (rc < 0)
		return rc;
	do
		rc = io_uring_wait_cqe(ring, &cqe);
	while (rc == -EINTR);
	if (rc < 0)
		return rc;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

enum { OP_READ, OP_WRITE };

static ssize_t uring_rw(int op, int fd, void *buf, size_t len, uint64_t off)
{
	struct io_uring *ring;
	size_t done = 0;
	int err = 0;

	ring = ring_get(&err);
	if (!ring)
		return err;
	while (done < len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		size_t piece = len - done;
		int res;

		if (!sqe)
			return -EBUSY; /* cannot happen: one call in flight per thread */
		if (piece > IO_MAX_BYTES)
			piece = IO_MAX_BYTES;
		if (op == OP_READ)
			io_uring_prep_read(sqe, fd, (char *)buf + done, (unsigned)piece,
				off + done);
		else
			io_uring_prep_write(sqe, fd, (char *)buf + done, (unsigned)piece,
				off + done);
		res = ring_run(ring);
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res < 0)
			return res;
		if (res == 0) {
			if (op == OP_READ)
				break; /* end of file */
			return -EIO;   /* a write that makes no progress is an error, never short */
		}
		done += (size_t)res;
	}
	return (ssize_t)done;
}

static ssize_t uring_pread(int fd, void *buf, size_t len, uint64_t off)
{
	return uring_rw(OP_READ, fd, buf, len, off);
}

static ssize_t uring_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return uring_rw(OP_WRITE, fd, (void *)buf, len, off);
}

static int uring_fdatasync(int fd)
{
	struct io_uring *ring;
	int err = 0, res;

	ring = ring_get(&err);
	if (!ring)
		return err;
	do {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		if (!sqe)
			return -EBUSY;
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		res = ring_run(ring);
	} while (res == -EINTR || res == -EAGAIN);
	return res < 0 ? res : 0;
}

const struct io_backend io_uring_backend = {
	.name = "io_uring",
	.pread = uring_pread,
	.pwrite = uring_pwrite,
	.fdatasync = uring_fdatasync,
};

static const struct io_backend *default_backend;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

/* A ring can be created and a NOP completes: io_uring works in this process. */
static bool uring_probe(void)
{
	struct io_uring *ring;
	struct io_uring_sqe *sqe;
	int err = 0;

	ring = ring_get(&err);
	if (!ring) {
		log_info("io_uring unavailable (%s); using synchronous disk I/O", strerror(-err));
		return false;
	}
	sqe = io_uring_get_sqe(ring);
	if (!sqe)
		return false;
	io_uring_prep_nop(sqe);
	err = ring_run(ring);
	if (err < 0) {
		log_info("io_uring NOP failed (%s); using synchronous disk I/O", strerror(-err));
		return false;
	}
	return true;
}

static void default_choose(void)
{
	const char *env = getenv("FERRY_IO");

	if (env && strcmp(env, "sync") == 0)
		default_backend = &io_sync_backend;
	else
		default_backend = uring_probe() ? &io_uring_backend : &io_sync_backend;
}

const struct io_backend *io_default(void)
{
	pthread_once(&default_once, default_choose);
	return default_backend;
}
