/* io_uring read backend: every read of a batch in flight at once, short reads resubmitted for
 * the rest. Compiled when liburing is found; read_nouring.c stands in otherwise. */
#include "config.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "loader/loader_i.h"

/* Owned by the reader thread alone. */
struct read_uring {
	struct io_uring ring;
	uint32_t depth;
};

int read_uring_new(struct read_uring **out, uint32_t depth)
{
	struct read_uring *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	u->depth = depth;
	ret = io_uring_queue_init(depth, &u->ring, 0);
	if (ret < 0) {
		free(u);
		return ret;
	}
	*out = u;
	return 0;
}

void read_uring_free(struct read_uring *u)
{
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u);
}

int read_uring_run(struct read_uring *u, struct read_op *ops, uint32_t nr_ops)
{
	uint32_t next = 0, inflight = 0;
	int first = 0, ret;

	for (uint32_t i = 0; i < nr_ops; i++)
		if (!ops[i].done)
			ops[i].res = 0; /* bytes done so far until complete */
	while (next < nr_ops || inflight) {
		struct io_uring_cqe *cqe;
		struct read_op *op;

		while (next < nr_ops && inflight < u->depth) {
			struct io_uring_sqe *sqe;

			if (ops[next].done) {
				next++;
				continue;
			}
			sqe = io_uring_get_sqe(&u->ring);
			if (!sqe)
				break;
			op = &ops[next++];
			io_uring_prep_read(sqe, op->fd, op->dst, op->len, op->off);
			io_uring_sqe_set_data(sqe, op);
			inflight++;
		}
		if (!inflight)
			continue; /* the rest were done already */
		ret = io_uring_submit_and_wait(&u->ring, 1);
		if (ret < 0 && ret != -EINTR)
			return ret; /* the ring is unusable; the caller falls back to pread */
		while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
			int res = cqe->res;
			uint32_t done;

			op = io_uring_cqe_get_data(cqe);
			io_uring_cqe_seen(&u->ring, cqe);
			inflight--;
			done = (uint32_t)op->res;
			if (res == -EINTR || res == -EAGAIN)
				res = 0; /* retry below as a zero-length progress */
			else if (res < 0) {
				op->res = res;
				if (!first)
					first = res;
				continue;
			} else if (res == 0) {
				op->res = done >= op->need ? (int)done : -EIO;
				if (op->res < 0 && !first)
					first = op->res;
				continue;
			}
			done += (uint32_t)res;
			op->res = (int)done;
			/* Enough (an O_DIRECT read may stop at the end of the file, past need). */
			if (done >= op->need)
				continue;
			/* Short read: ask for the rest. */
			struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

			if (!sqe) {
				io_uring_submit(&u->ring);
				sqe = io_uring_get_sqe(&u->ring);
			}
			if (!sqe) {
				op->res = -EIO;
				if (!first)
					first = -EIO;
				continue;
			}
			io_uring_prep_read(sqe, op->fd, (char *)op->dst + done, op->len - done,
				op->off + done);
			io_uring_sqe_set_data(sqe, op);
			inflight++;
		}
	}
	return first;
}
