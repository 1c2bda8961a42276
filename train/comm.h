/* train/: the collective the data-parallel trainer needs, behind one small table of functions:
 * "none" (one process), "mpi" (CPU ranks, when built with MPI) and "nccl" (GPU ranks, when built
 * with NCCL). The launcher (launch.h) says where a process sits; comm_choose says which table.
 * Each rank computes gradients on its own share of the batch; comm_allreduce_mean averages them,
 * or with ZeRO (zero.h) reduce_scatter_sum gives each rank its slice and allgather shares the
 * updated slices. */
#ifndef FERRY_TRAIN_COMM_H
#define FERRY_TRAIN_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/launch.h"

struct comm;

struct comm_ops {
	const char *name;
	/* 0, or -errno with one line in err; sets rank and world_size (those of c->launch) */
	int (*init)(struct comm *c, int *argc, char ***argv, char *err, size_t errlen);
	/* buf (n) = sum over ranks of buf, the same bytes on every rank */
	void (*allreduce_sum)(struct comm *c, float *buf, size_t n);
	void (*barrier)(struct comm *c);
	/* buf (n) = element-wise maximum over ranks of buf (host memory), on every rank */
	void (*allreduce_max_u64)(struct comm *c, uint64_t *buf, size_t n);
	/* buf holds world_size slices of count floats: afterwards slice `rank` (buf + rank *
	 * count) is the sum over ranks of that slice; the other slices are undefined (ZeRO-2's
	 * gradients, zero.h) */
	void (*reduce_scatter_sum)(struct comm *c, float *buf, size_t count);
	/* buf holds world_size slices of count floats, this rank's own slice filled in: afterwards
	 * every slice is its rank's (ZeRO's parameters after the sharded update) */
	void (*allgather)(struct comm *c, float *buf, size_t count);
	/* Overlapped gradient reduction (zero.c's buckets); NULL where the backend has none (the
	 * trainer then reduces with allreduce_sum). start_allreduce_sum begins buf (n) = sum over
	 * ranks of buf and returns at once: buf is not touched until wait_all, which returns once
	 * every reduction started is done. progress lets the library move them along (MPI moves
	 * a nonblocking collective only inside its calls) and says whether all are done. Every
	 * rank starts the same reductions in the same order. nccl: buf is device memory, the
	 * reduction ordered after the work queued on cuda_stream so far; wait_all orders
	 * cuda_stream after the reductions, on the device (the host waits in sync). */
	void (*start_allreduce_sum)(struct comm *c, float *buf, size_t n);
	bool (*progress)(struct comm *c);
	void (*wait_all)(struct comm *c);
	/* The host waits for the device work queued on cuda_stream (and the overlap's), the
	 * collectives among it, for at most the comm's timeout: a peer that died leaves a
	 * collective that never ends, and this ends the process with one line instead. NULL where
	 * a collective is done when its call returns (none, mpi). */
	void (*sync)(struct comm *c);
	/* A sub-communicator (the grid's groups, grid.h): the ranks of c that give the same color
	 * make one, ordered by key; out gets this table, its own rank and world_size. A
	 * collective of every rank of c. 0, or -errno with one line in err. NULL where the backend
	 * has none (one process). */
	int (*split)(struct comm *c, int color, int key, struct comm *out, char *err,
		size_t errlen);
	/* buf (n bf16 values, device memory) = the sum over ranks, enqueued on cuda_stream
	 * without a wait: the GPU trainer's tensor-parallel activations in bf16 (allreduce_sum
	 * is fp32). NULL where the backend has none (only nccl has). */
	void (*allreduce_sum_bf16)(struct comm *c, void *buf, size_t n);
	/* c's resources; the process's too for the world's (MPI_Finalize), a sub-communicator's
	 * only its own */
	void (*done)(struct comm *c);
	/* ends every rank with status (a rank alone cannot leave the others in a collective) */
	void (*abort_all)(struct comm *c, int status);
	/* Point-to-point, for pipeline parallel (pp.h): sends sbytes of sbuf to rank dest while
	 * it receives rbytes into rbuf from rank src, so that two neighbours sending to each
	 * other at once never wait on each other; dest or src < 0 skips that side. Messages
	 * between two ranks arrive in the order sent. NULL where the backend has none. nccl:
	 * device buffers are enqueued on cuda_stream without a wait (the GPU pipeline's
	 * stages wait through sync); host buffers wait. */
	void (*sendrecv)(struct comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf,
		size_t rbytes, int src);
};

/* One per process; rank and world_size are fixed after comm_init. */
struct comm {
	const struct comm_ops *ops;
	int rank, world_size;
	/* nccl: the cudaStream_t device reductions are enqueued on, set by the GPU trainer (NULL:
	 * the legacy default stream); they return without waiting. Host buffers wait. With
	 * start_allreduce_sum it is the stream whose work so far makes the bucket final, and
	 * wait_all makes it wait for the buckets (no host wait: see sync). */
	void *cuda_stream;
	struct launch launch; /* read by comm_init, before ops->init */
	void *pending;        /* mpi: the reductions start_allreduce_sum began (comm_mpi.c) */
	void *group; /* a sub-communicator's MPI_Comm (mpi) or ncclComm_t (nccl); NULL: the world */
	/* payload bytes of the reductions, gathers and scatters issued on c (each buffer's size
	 * once, whatever the algorithm sends): the benchmark's count (mpi only) */
	uint64_t nr_bytes;
	/* nccl: hands rank 0's n bytes (the NCCL id) to every rank: one MPI_Bcast where an MPI
	 * launcher started the job and MPI is built in, else the TCP rendezvous (rendezvous.h).
	 * 0, or -errno with one line in err. */
	int (*share_id)(struct comm *c, void *buf, size_t n, char *err, size_t errlen);
};

extern const struct comm_ops comm_none_ops;
#if HAVE_MPI
extern const struct comm_ops comm_mpi_ops;
/* comm_mpi.c: MPI_Init, one MPI_Bcast of buf from rank 0, MPI_Finalize; for share_id */
int comm_mpi_share_id(struct comm *c, void *buf, size_t n, char *err, size_t errlen);
#endif
#if HAVE_NCCL
extern const struct comm_ops comm_nccl_ops;
#endif

/* The TCP rendezvous as share_id (rendezvous.h): where the launcher is not MPI's, or MPI is
 * not built in. Its port and deadline come from c->launch. */
int comm_share_id_tcp(struct comm *c, void *buf, size_t n, char *err, size_t errlen);

enum comm_kind { COMM_NONE, COMM_MPI, COMM_NCCL };

/* Which collective ranks of launch l use: GPU ranks (gpu) NCCL, CPU ranks MPI, one process none
 * (a CPU process under an MPI launcher: MPI). COMM_* or -EINVAL with one line in err where the
 * build lacks what the ranks need: CPU ranks without MPI would each train alone, and CPU ranks
 * started without an MPI launcher (torchrun) have no MPI to join. */
int comm_choose(const struct launch *l, bool gpu, bool have_mpi, bool have_nccl, char *err,
	size_t errlen);
/* Reads the launch, picks the collective for CPU or GPU ranks (gpu) and starts it. Returns 0;
 * a launch it cannot serve ends the process: one line on stderr, exit status 1. */
int comm_init_ranks(struct comm *c, int *argc, char ***argv, bool gpu);
/* comm_init_ranks for `ferry train`'s arguments (argv[0] "train"): GPU ranks where they say
 * --device cuda. */
int comm_init(struct comm *c, int *argc, char ***argv);
void comm_done(struct comm *c);
/* A group of one, this process alone (comm_none's table): a grid's group of size 1 never calls
 * the world's backend. */
void comm_self(struct comm *out);
/* buf = mean over ranks of buf: a sum, then one multiplication by 1/world_size. */
void comm_allreduce_mean(struct comm *c, float *buf, size_t n);
void comm_barrier(struct comm *c);
/* differs[i] = 1 where v[i] is not the same on every rank, else 0: the same answer on every
 * rank, from one collective. 0, or -EINVAL for n > COMM_DIFFERING_MAX (the same on every rank
 * as n is the code's; no allocation that could fail on one rank alone). */
#define COMM_DIFFERING_MAX 128
int comm_differing(struct comm *c, const uint64_t *v, size_t n, unsigned char *differs);

#endif
