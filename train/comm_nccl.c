/* train/: the NCCL collective for the GPU trainer, one process per GPU, under any launcher
 * (launch.h): the GPU is the local rank's; rank 0 makes the NCCL id and comm->share_id hands it
 * out (MPI_Bcast where MPI started the job, else the TCP rendezvous); then every reduction
 * runs on the GPU. Device buffers are reduced on comm->cuda_stream without waiting; host
 * buffers (the loss, a validation loss) go through a small device bounce buffer and wait. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "train/comm.h"
#include "train/gpt_cuda.h"

#define NCCL_CHECK(x)                                                                              \
	do {                                                                                       \
		ncclResult_t r_ = (x);                                                             \
		if (r_ != ncclSuccess) {                                                           \
			fprintf(stderr, "NCCL error at %s:%d: %s: %s\n", __FILE__, __LINE__, #x,   \
				ncclGetErrorString(r_));                                           \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

/* one communicator per process */
static ncclComm_t nccl_comm;
static float *bounce; /* device buffer for host reductions */
static size_t bounce_n;

/* The bounce buffer grown to n floats; no device memory ends the process with one line. */
static void bounce_reserve(size_t n)
{
	if (n <= bounce_n)
		return;
	cudaFree(bounce);
	if (cudaMalloc((void **)&bounce, n * sizeof(float)) != cudaSuccess) {
		fprintf(stderr, "comm nccl: out of device memory\n");
		exit(1);
	}
	bounce_n = n;
}

static int nccl_init(struct comm *c, int *argc, char ***argv, char *err, size_t errlen)
{
	const struct launch *l = &c->launch;
	int nr_devices = 0, device, rc;
	ncclUniqueId id;

	if (cudaGetDeviceCount(&nr_devices) != cudaSuccess || nr_devices == 0) {
		snprintf(err, errlen, "rank %d: no CUDA device", l->rank);
		return -ENODEV;
	}
	/* One GPU per rank, by local rank. A node that shows each rank only its own GPU
	 * (CUDA_VISIBLE_DEVICES per task) has one device and every local rank takes it; more
	 * ranks than the GPUs it shows would put two ranks on one GPU. */
	if (nr_devices > 1 && l->local_world_size > nr_devices) {
		snprintf(err, errlen, "%s started %d ranks on this node, which has %d GPUs",
			l->name, l->local_world_size, nr_devices);
		return -EINVAL;
	}
	/* The trainer's and the loader's device: a communicator on another one would be handed
	 * buffers it cannot use. */
	device = gpt2_cuda_local_device();
	if (cudaSetDevice(device) != cudaSuccess) {
		snprintf(err, errlen, "rank %d: cannot use GPU %d", l->rank, device);
		return -ENODEV;
	}
	memset(&id, 0, sizeof(id));
	if (l->rank == 0)
		NCCL_CHECK(ncclGetUniqueId(&id));
	rc = c->share_id(c, &id, sizeof(id), err, errlen);
	if (rc < 0)
		return rc;
	NCCL_CHECK(ncclCommInitRank(&nccl_comm, l->world_size, id, l->rank));
	c->rank = l->rank;
	c->world_size = l->world_size;
	return 0;
}

static void nccl_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	struct cudaPointerAttributes attr;
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	if (cudaPointerGetAttributes(&attr, buf) == cudaSuccess &&
		attr.type == cudaMemoryTypeDevice) {
		NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, nccl_comm, s));
		return;
	}
	cudaGetLastError(); /* a host pointer may leave an error behind on old runtimes */
	bounce_reserve(n);
	if (cudaMemcpyAsync(bounce, buf, n * sizeof(float), cudaMemcpyHostToDevice, s) !=
		cudaSuccess)
		exit(1);
	NCCL_CHECK(ncclAllReduce(bounce, bounce, n, ncclFloat, ncclSum, nccl_comm, s));
	if (cudaMemcpyAsync(buf, bounce, n * sizeof(float), cudaMemcpyDeviceToHost, s) !=
			cudaSuccess ||
		cudaStreamSynchronize(s) != cudaSuccess)
		exit(1);
}

/* Small host tables only (the ranks' agreement at start): a device buffer of their own, freed
 * at once, so the float bounce buffer keeps its size. */
static void nccl_allreduce_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	uint64_t *d = NULL;
	if (cudaMalloc((void **)&d, n * sizeof(*d)) != cudaSuccess) {
		fprintf(stderr, "comm nccl: out of device memory\n");
		exit(1);
	}
	if (cudaMemcpyAsync(d, buf, n * sizeof(*d), cudaMemcpyHostToDevice, s) != cudaSuccess)
		exit(1);
	NCCL_CHECK(ncclAllReduce(d, d, n, ncclUint64, ncclMax, nccl_comm, s));
	if (cudaMemcpyAsync(buf, d, n * sizeof(*d), cudaMemcpyDeviceToHost, s) != cudaSuccess ||
		cudaStreamSynchronize(s) != cudaSuccess)
		exit(1);
	cudaFree(d);
}

/* Device buffers only (the GPU trainer's gradients and parameters), in place: NCCL's in-place
 * slice is the rank's own, where comm.h puts it. Enqueued on comm->cuda_stream; no wait. */
static void nccl_reduce_scatter_sum(struct comm *c, float *buf, size_t count)
{
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	NCCL_CHECK(ncclReduceScatter(buf, buf + (size_t)c->rank * count, count, ncclFloat, ncclSum,
		nccl_comm, s));
}

/* Device buffers enqueued without a wait; a host buffer (a sharded checkpoint's table of the
 * shards) through the bounce buffer, waited for. */
static void nccl_allgather(struct comm *c, float *buf, size_t count)
{
	struct cudaPointerAttributes attr;
	cudaStream_t s = (cudaStream_t)c->cuda_stream;
	size_t n = count * (size_t)c->world_size, mine = (size_t)c->rank * count;
	if (cudaPointerGetAttributes(&attr, buf) == cudaSuccess &&
		attr.type == cudaMemoryTypeDevice) {
		NCCL_CHECK(ncclAllGather(buf + mine, buf, count, ncclFloat, nccl_comm, s));
		return;
	}
	cudaGetLastError();
	bounce_reserve(n);
	if (cudaMemcpyAsync(bounce + mine, buf + mine, count * sizeof(float),
		    cudaMemcpyHostToDevice, s) != cudaSuccess)
		exit(1);
	NCCL_CHECK(ncclAllGather(bounce + mine, bounce, count, ncclFloat, nccl_comm, s));
	if (cudaMemcpyAsync(buf, bounce, n * sizeof(float), cudaMemcpyDeviceToHost, s) !=
			cudaSuccess ||
		cudaStreamSynchronize(s) != cudaSuccess)
		exit(1);
}

static void nccl_barrier(struct comm *c)
{
	float one = 1.0f;
	nccl_allreduce_sum(c, &one, 1);
}

static void nccl_done(struct comm *c)
{
	if (nccl_comm)
		ncclCommDestroy(nccl_comm);
	nccl_comm = NULL;
	cudaFree(bounce);
	bounce = NULL;
	bounce_n = 0;
}

static void nccl_abort_all(struct comm *c, int status)
{
	/* the others see their collective fail and exit through their own error path */
	if (nccl_comm)
		ncclCommAbort(nccl_comm);
	exit(status);
}

const struct comm_ops comm_nccl_ops = {
	.name = "nccl",
	.init = nccl_init,
	.allreduce_sum = nccl_allreduce_sum,
	.barrier = nccl_barrier,
	.allreduce_max_u64 = nccl_allreduce_max_u64,
	.reduce_scatter_sum = nccl_reduce_scatter_sum,
	.allgather = nccl_allgather,
	.done = nccl_done,
	.abort_all = nccl_abort_all,
};
