/* The plain read path: pread of each range (the oracle the io_uring backend is tested against)
 * and host widening of raw tokens into int32 (the CPU twin of the GPU widening kernel). */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "loader/loader_i.h"

int read_pread_run(struct read_op *ops, uint32_t nr_ops)
{
	int first = 0;

	for (uint32_t i = 0; i < nr_ops; i++) {
		struct read_op *op = &ops[i];
		uint32_t done = 0;

		if (op->done)
			continue;
		while (done < op->len) {
			ssize_t r = pread(op->fd, (char *)op->dst + done, op->len - done,
				(off_t)(op->off + done));

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				op->res = -errno;
				goto next;
			}
			if (r == 0)
				break;
			done += (uint32_t)r;
		}
		op->res = done >= op->need ? (int)done : -EIO;
	next:
		if (op->res < 0 && !first)
			first = op->res;
	}
	return first;
}

int read_nowait_run(struct read_op *ops, uint32_t nr_ops)
{
	int nr_done = 0;

	for (uint32_t i = 0; i < nr_ops; i++) {
		struct read_op *op = &ops[i];
		struct iovec iov = { .iov_base = op->dst, .iov_len = op->len };
		ssize_t r;

		if (op->done)
			continue;
		r = preadv2(op->fd, &iov, 1, (off_t)op->off, RWF_NOWAIT);
		if (r < 0 && errno == EOPNOTSUPP)
			return -EOPNOTSUPP;
		/* A short read is either the end of the file or a page not cached: io_uring
		 * redoes the whole op and tells the two apart. */
		if (r >= 0 && (uint32_t)r >= op->need) {
			op->res = (int)r;
			op->done = true;
			nr_done++;
		}
	}
	return nr_done;
}

/* Widening runs once per token on the reader thread and bounds the CPU path's throughput;
 * at -O2 gcc leaves these loops scalar (about half of dd's rate in bench_loader.sh), so they
 * ask for vectorisation explicitly. */
#if defined(__GNUC__) && !defined(__clang__)
#define WIDEN_FAST __attribute__((optimize("tree-vectorize")))
#else
#define WIDEN_FAST
#endif

WIDEN_FAST void widen_run(const void *raw, uint32_t token_bytes, size_t n, int32_t *out)
{
	if (token_bytes == 2) {
		const uint16_t *src = raw;

		for (size_t i = 0; i < n; i++)
			out[i] = src[i];
	} else {
		memcpy(out, raw, n * 4);
	}
}

WIDEN_FAST void widen_rows(const void *raw, uint32_t token_bytes, uint32_t batch, uint32_t seq_len,
	uint32_t row_stride, int32_t *inputs, int32_t *targets)
{
	for (uint32_t b = 0; b < batch; b++) {
		int32_t *in = inputs + (size_t)b * seq_len, *tg = targets + (size_t)b * seq_len;
		size_t row = (size_t)b * row_stride;

		if (token_bytes == 2) {
			const uint16_t *src = (const uint16_t *)raw + row;

			for (uint32_t t = 0; t < seq_len; t++)
				in[t] = src[t];
			for (uint32_t t = 0; t < seq_len; t++)
				tg[t] = src[t + 1];
		} else {
			const uint32_t *src = (const uint32_t *)raw + row;

			memcpy(in, src, (size_t)seq_len * 4);
			memcpy(tg, src + 1, (size_t)seq_len * 4);
		}
	}
}
