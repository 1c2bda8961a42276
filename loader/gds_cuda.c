/* GPUDirect Storage for the loader's ferry fast path: libcufile, loaded at run time, reads
 * ferry cache files straight into a reader's registered device buffer (cuFileRead), from which
 * the batch's rows are copied into the staging slot on the GPU. gds_none.c is the host twin. */
#include "config.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "loader/cufile_i.h"
#include "loader/loader_i.h"

/* Immutable after gds_open. */
struct gds {
	void *lib; /* dlopen handle of libcufile */
	int device;
	struct cufile_api api;
};

/* One reader's own; immutable after gds_reader_new. */
struct gds_reader {
	struct gds *g;
	void *d_buf; /* cudaMalloc'd, registered with cuFileBufRegister */
	size_t bytes;
	bool registered;
	cudaStream_t stream;
};

static void *lookup(void *lib, const char *name, const char *alt)
{
	void *p = alt ? dlsym(lib, alt) : NULL;

	return p ? p : dlsym(lib, name);
}

int gds_open(struct gds **out, int device, char *err, size_t errlen)
{
	struct gds *g = calloc(1, sizeof(*g));
	struct ferry_cufile_error e;
	int ret = -ENOSYS;

	*out = NULL;
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->device = device;
	g->lib = dlopen("libcufile.so.0", RTLD_NOW | RTLD_LOCAL);
	if (!g->lib)
		g->lib = dlopen("libcufile.so", RTLD_NOW | RTLD_LOCAL);
	if (!g->lib) {
		snprintf(err, errlen, "no libcufile");
		goto fail;
	}
	/* dlsym hands back object pointers; the ABI (POSIX) makes them function pointers. */
	*(void **)&g->api.driver_open = lookup(g->lib, "cuFileDriverOpen", NULL);
	*(void **)&g->api.driver_close =
		lookup(g->lib, "cuFileDriverClose", "cuFileDriverClose_v2");
	*(void **)&g->api.handle_register = lookup(g->lib, "cuFileHandleRegister", NULL);
	*(void **)&g->api.handle_deregister = lookup(g->lib, "cuFileHandleDeregister", NULL);
	*(void **)&g->api.buf_register = lookup(g->lib, "cuFileBufRegister", NULL);
	*(void **)&g->api.buf_deregister = lookup(g->lib, "cuFileBufDeregister", NULL);
	*(void **)&g->api.read = lookup(g->lib, "cuFileRead", NULL);
	if (!g->api.driver_open || !g->api.driver_close || !g->api.handle_register ||
		!g->api.handle_deregister || !g->api.buf_register || !g->api.buf_deregister ||
		!g->api.read) {
		snprintf(err, errlen, "libcufile lacks a cuFile function the loader needs");
		goto fail;
	}
	/* The driver binds to the current device's context. */
	if (cudaSetDevice(device) != cudaSuccess) {
		snprintf(err, errlen, "cudaSetDevice(%d) failed", device);
		ret = -EIO;
		goto fail;
	}
	e = g->api.driver_open();
	if (e.err != FERRY_CU_FILE_SUCCESS) {
		snprintf(err, errlen, "cuFileDriverOpen failed (cuFile error %d, CUDA error %d)",
			e.err, e.cu_err);
		g->api.driver_close = NULL; /* nothing to close */
		ret = -EIO;
		goto fail;
	}
	*out = g;
	return 0;
fail:
	gds_free(g);
	return ret;
}

void gds_free(struct gds *g)
{
	if (!g)
		return;
	if (g->lib && g->api.driver_close)
		g->api.driver_close();
	if (g->lib)
		dlclose(g->lib);
	free(g);
}

int gds_handle_register(struct gds *g, int fd, void **handle)
{
	struct ferry_cufile_descr d = { .type = FERRY_CU_FILE_HANDLE_TYPE_OPAQUE_FD };
	struct ferry_cufile_error e;

	d.handle.fd = fd;
	*handle = NULL;
	e = g->api.handle_register(handle, &d);
	if (e.err != FERRY_CU_FILE_SUCCESS) {
		*handle = NULL;
		return -EIO;
	}
	return 0;
}

void gds_handle_deregister(struct gds *g, void *handle)
{
	if (g && handle)
		g->api.handle_deregister(handle);
}

int gds_reader_new(struct gds *g, size_t bytes, struct gds_reader **out)
{
	struct gds_reader *gr = calloc(1, sizeof(*gr));
	struct ferry_cufile_error e;

	*out = NULL;
	if (!gr)
		return -ENOMEM;
	gr->g = g;
	gr->bytes = bytes;
	if (cudaSetDevice(g->device) != cudaSuccess ||
		cudaMalloc(&gr->d_buf, bytes) != cudaSuccess ||
		cudaStreamCreateWithFlags(&gr->stream, cudaStreamNonBlocking) != cudaSuccess)
		goto fail;
	/* Registered once: cuFileRead into an unregistered buffer goes through the library's own
	 * bounce buffers, which is what this path exists to avoid. */
	e = g->api.buf_register(gr->d_buf, bytes, 0);
	if (e.err != FERRY_CU_FILE_SUCCESS)
		goto fail;
	gr->registered = true;
	*out = gr;
	return 0;
fail:
	gds_reader_free(gr);
	return -EIO;
}

void gds_reader_free(struct gds_reader *gr)
{
	if (!gr)
		return;
	if (gr->stream)
		cudaStreamSynchronize(gr->stream);
	if (gr->registered)
		gr->g->api.buf_deregister(gr->d_buf);
	if (gr->d_buf)
		cudaFree(gr->d_buf);
	if (gr->stream)
		cudaStreamDestroy(gr->stream);
	free(gr);
}

void *gds_reader_stream(struct gds_reader *gr)
{
	return (void *)gr->stream;
}

int64_t gds_read(struct gds_reader *gr, void *handle, uint64_t file_off, size_t len,
	uint64_t buf_off)
{
	ssize_t n;

	if (buf_off > gr->bytes || len > gr->bytes - buf_off)
		return -EINVAL;
	/* The CUDA runtime's current device is per thread: the reader thread sets it here. */
	if (cudaSetDevice(gr->g->device) != cudaSuccess)
		return -EIO;
	errno = 0;
	n = gr->g->api.read(handle, gr->d_buf, len, (off_t)file_off, (off_t)buf_off);
	if (n == -1 && errno)
		return -errno;
	return n < 0 ? -EIO : (int64_t)n;
}

int gds_copy(struct gds_reader *gr, void *d_dst, uint64_t buf_off, size_t len)
{
	if (buf_off > gr->bytes || len > gr->bytes - buf_off)
		return -EINVAL;
	return cudaMemcpyAsync(d_dst, (char *)gr->d_buf + buf_off, len, cudaMemcpyDeviceToDevice,
		       gr->stream) == cudaSuccess
		       ? 0
		       : -EIO;
}

int gds_sync(struct gds_reader *gr)
{
	return cudaStreamSynchronize(gr->stream) == cudaSuccess ? 0 : -EIO;
}
