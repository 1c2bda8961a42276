/* The small part of NVIDIA's cuFile (GPUDirect Storage) C API that loader/gds_cuda.c resolves
 * with dlsym at run time; cufile.h is not needed to build ferry. Not a public header. */
#ifndef FERRY_CUFILE_I_H
#define FERRY_CUFILE_I_H

#include <stddef.h>
#include <sys/types.h>

/* Declared by hand from NVIDIA's documented cuFile ABI (cufile.h of the GDS / CUDA toolkit, as
 * its API reference describes it), not copied from the header, which is not installed here.
 * Only what the loader calls; the layouts are those the library has kept since GDS 1.0. Never
 * checked against a real libcufile on this machine: see docs/train.md. */

enum ferry_cufile_op_error {
	FERRY_CU_FILE_SUCCESS = 0, /* CU_FILE_SUCCESS; any other value is a failure */
};

/* CUfileError_t: err is a CUfileOpError, cu_err a CUresult (meaningful when err says a CUDA
 * driver call failed). Returned by value. */
struct ferry_cufile_error {
	int err;
	int cu_err;
};

enum ferry_cufile_handle_type {
	FERRY_CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1, /* CU_FILE_HANDLE_TYPE_OPAQUE_FD: a Linux fd */
};

/* CUfileDescr_t: which kind of handle, the handle, and file system hooks (NULL: none). */
struct ferry_cufile_descr {
	int type; /* enum ferry_cufile_handle_type */
	union {
		int fd;
		void *handle;
	} handle;
	const void *fs_ops;
};

/* The functions, as gds_cuda.c resolves them. A CUfileHandle_t is an opaque pointer. cuFileRead
 * returns the bytes read, or -1 with errno set (a system error), or a negative CUfileOpError.
 * cuFileDriverClose is looked up as cuFileDriverClose_v2 first (what newer headers map the name
 * to), then by its first name. */
struct cufile_api {
	struct ferry_cufile_error (*driver_open)(void);
	struct ferry_cufile_error (*driver_close)(void);
	struct ferry_cufile_error (*handle_register)(void **fh, struct ferry_cufile_descr *descr);
	void (*handle_deregister)(void *fh);
	struct ferry_cufile_error (*buf_register)(const void *dev_ptr, size_t length, int flags);
	struct ferry_cufile_error (*buf_deregister)(const void *dev_ptr);
	ssize_t (*read)(void *fh, void *dev_ptr, size_t size, off_t file_offset,
		off_t dev_ptr_offset);
};

#endif
