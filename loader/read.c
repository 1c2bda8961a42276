/* The plain read path: pread of each range (the oracle the io_uring backend is tested against)
 * and host widening of raw tokens into int32 (the CPU twin of the GPU widening kernel). */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "loader/loader_i.h"

int read_pread_run(struct read_op *ops, uint32_t nr_ops)
{
	int first = 0;

	for (uint32_t i = 0; i < nr_ops; i++) {
		struct read_op *op = &ops[i];
		uint32_t done = 0;

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
