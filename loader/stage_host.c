/* Host staging backend (built without CUDA): a ring of page-aligned host buffers the reader
 * fills and the CPU trainer reads. stage_cuda.c is its counterpart with pinned memory. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "loader/loader_i.h"

/* Immutable after stage_new. */
struct stage {
	uint32_t nr_slots;
	void **host; /* nr_slots buffers of raw_bytes, 4 KiB aligned */
};

int stage_new(struct stage **out, int device, uint32_t nr_slots, size_t raw_bytes, uint32_t batch,
	uint32_t seq_len, char *err, size_t errlen)
{
	struct stage *st;

	if (device >= 0) {
		snprintf(err, errlen, "device %d asked for, but ferry was built without CUDA",
			device);
		return -ENODEV;
	}
	st = calloc(1, sizeof(*st));
	if (!st || !(st->host = calloc(nr_slots, sizeof(void *))))
		goto nomem;
	st->nr_slots = nr_slots;
	for (uint32_t i = 0; i < nr_slots; i++)
		if (posix_memalign(&st->host[i], 4096, raw_bytes) != 0) {
			st->host[i] = NULL;
			goto nomem;
		}
	*out = st;
	return 0;
nomem:
	stage_free(st);
	snprintf(err, errlen, "out of memory for %u staging buffers of %zu bytes", nr_slots,
		raw_bytes);
	return -ENOMEM;
}

void stage_free(struct stage *st)
{
	if (!st)
		return;
	for (uint32_t i = 0; st->host && i < st->nr_slots; i++)
		free(st->host[i]);
	free(st->host);
	free(st);
}

void *stage_host_buffer(struct stage *st, uint32_t slot)
{
	return st->host[slot];
}

int stage_upload(struct stage *st, uint32_t slot, uint32_t token_bytes, uint32_t row_stride,
	struct loader_batch *b)
{
	b->d_inputs = b->d_targets = NULL;
	b->ready_event = b->consumed_event = NULL;
	return 0;
}

int stage_reclaim(struct stage *st, uint32_t slot)
{
	return 0;
}

const char *stage_name(void)
{
	return "host";
}
