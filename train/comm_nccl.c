/* train/: the NCCL collective for the GPU trainer, one process per GPU, started like torchrun:
 * RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Rank 0 makes the NCCL id and hands it
 * to the others over one TCP connection each (MASTER_ADDR:MASTER_PORT); then every reduction
 * runs on the GPU. Device buffers are reduced on comm->cuda_stream without waiting; host
 * buffers (the loss, a validation loss) go through a small device bounce buffer and wait. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

static int env_int(const char *name, int dflt)
{
	const char *s = getenv(name);
	return s && *s ? atoi(s) : dflt;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Rank 0 serves id to world-1 connections; the others connect (retrying while rank 0 starts). */
static int exchange_id(ncclUniqueId *id, int rank, int world)
{
	const char *addr = getenv("MASTER_ADDR");
	const char *port = getenv("MASTER_PORT");
	if (!addr || !port) {
		fprintf(stderr, "comm nccl: MASTER_ADDR and MASTER_PORT must be set\n");
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(addr, port, &hints, &ai) != 0) {
		fprintf(stderr, "comm nccl: cannot resolve %s:%s\n", addr, port);
		return -EINVAL;
	}
	int ret = -EIO;
	if (rank == 0) {
		int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in any = *(struct sockaddr_in *)ai->ai_addr;
		if (s < 0 || bind(s, (struct sockaddr *)&any, sizeof(any)) < 0 ||
			listen(s, world) < 0) {
			fprintf(stderr, "comm nccl: cannot listen on %s:%s: %s\n", addr, port,
				strerror(errno));
			if (s >= 0)
				close(s);
			goto out;
		}
		for (int i = 1; i < world; i++) {
			int c = accept(s, NULL, NULL);
			if (c < 0 || write_all(c, id, sizeof(*id)) < 0) {
				if (c >= 0)
					close(c);
				close(s);
				goto out;
			}
			close(c);
		}
		close(s);
		ret = 0;
	} else {
		for (int tries = 0; tries < 600; tries++) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			if (s >= 0 && connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
				ret = read_all(s, id, sizeof(*id)) < 0 ? -EIO : 0;
				close(s);
				break;
			}
			if (s >= 0)
				close(s);
			usleep(100 * 1000);
		}
		if (ret < 0)
			fprintf(stderr, "comm nccl: rank %d cannot get the NCCL id from %s:%s\n",
				rank, addr, port);
	}
out:
	freeaddrinfo(ai);
	return ret;
}

static int nccl_init(struct comm *c, int *argc, char ***argv)
{
	int rank = env_int("RANK", -1), world = env_int("WORLD_SIZE", -1);
	if (rank < 0 || world < 1 || rank >= world) {
		fprintf(stderr,
			"comm nccl: RANK and WORLD_SIZE must be set (0 <= RANK < WORLD_SIZE)\n");
		return -EINVAL;
	}
	int nr_devices = 0;
	if (cudaGetDeviceCount(&nr_devices) != cudaSuccess || nr_devices == 0) {
		fprintf(stderr, "comm nccl: no CUDA device\n");
		return -ENODEV;
	}
	/* The trainer's and the loader's device: a communicator on another one would be handed
	 * buffers it cannot use. */
	if (cudaSetDevice(gpt2_cuda_local_device()) != cudaSuccess)
		return -ENODEV;
	ncclUniqueId id;
	if (rank == 0)
		NCCL_CHECK(ncclGetUniqueId(&id));
	if (exchange_id(&id, rank, world) < 0)
		return -EIO;
	NCCL_CHECK(ncclCommInitRank(&nccl_comm, world, id, rank));
	c->rank = rank;
	c->world_size = world;
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
	if (n > bounce_n) {
		cudaFree(bounce);
		if (cudaMalloc((void **)&bounce, n * sizeof(float)) != cudaSuccess) {
			fprintf(stderr, "comm nccl: out of device memory\n");
			exit(1);
		}
		bounce_n = n;
	}
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
	.done = nccl_done,
	.abort_all = nccl_abort_all,
};
