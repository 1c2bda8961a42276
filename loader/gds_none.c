/* GPUDirect Storage, host build (no CUDA): the twin of gds_cuda.c that says it is unavailable,
 * so the loader keeps its host fast path. */
#include "config.h"

#include <errno.h>
#include <stdio.h>

#include "loader/loader_i.h"

int gds_open(struct gds **out, int device, char *err, size_t errlen)
{
	*out = NULL;
	snprintf(err, errlen, "built without CUDA");
	return -ENOSYS;
}

void gds_free(struct gds *g)
{
}

int gds_handle_register(struct gds *g, int fd, void **handle)
{
	*handle = NULL;
	return -ENOSYS;
}

void gds_handle_deregister(struct gds *g, void *handle)
{
}

int gds_reader_new(struct gds *g, size_t bytes, struct gds_reader **out)
{
	*out = NULL;
	return -ENOSYS;
}

void gds_reader_free(struct gds_reader *gr)
{
}

void *gds_reader_stream(struct gds_reader *gr)
{
	return NULL;
}

int64_t gds_read(struct gds_reader *gr, void *handle, uint64_t file_off, size_t len,
	uint64_t buf_off)
{
	return -ENOSYS;
}

int gds_copy(struct gds_reader *gr, void *d_dst, uint64_t buf_off, size_t len)
{
	return -ENOSYS;
}

int gds_sync(struct gds_reader *gr)
{
	return -ENOSYS;
}

/* The staging half of the cufile path: stage_host.c has no device buffers. Kept here, not in
 * stage_host.c, so that the host build's cufile twins live in one file. */
void *stage_device_buffer(struct stage *st, uint32_t slot)
{
	return NULL;
}

int stage_widen_device(struct stage *st, uint32_t slot, void *stream, uint32_t token_bytes,
	uint32_t row_stride, int32_t *h_inputs, int32_t *h_targets)
{
	return -ENOSYS;
}
