/* train/: the collective the data-parallel trainer needs, behind one small table of functions:
 * "none" (one process), "mpi" (Open MPI, when built with it) and "nccl" (GPU buffers, when built
 * with NCCL; started like torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
 * Each rank computes gradients on its own share of the batch; comm_allreduce_mean averages them. */
#ifndef FERRY_TRAIN_COMM_H
#define FERRY_TRAIN_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct comm;

struct comm_ops {
	const char *name;
	/* 0 or -errno; sets rank and world_size */
	int (*init)(struct comm *c, int *argc, char ***argv);
	/* buf (n) = sum over ranks of buf, the same bytes on every rank */
	void (*allreduce_sum)(struct comm *c, float *buf, size_t n);
	void (*barrier)(struct comm *c);
	/* buf (n) = element-wise maximum over ranks of buf (host memory), on every rank */
	void (*allreduce_max_u64)(struct comm *c, uint64_t *buf, size_t n);
	void (*done)(struct comm *c);
	/* ends every rank with status (a rank alone cannot leave the others in a collective) */
	void (*abort_all)(struct comm *c, int status);
};

/* One per process; rank and world_size are fixed after comm_init. */
struct comm {
	const struct comm_ops *ops;
	int rank, world_size;
	/* nccl: the cudaStream_t device reductions are enqueued on, set by the GPU trainer (NULL:
	 * the legacy default stream); they return without waiting. Host buffers wait. */
	void *cuda_stream;
};

extern const struct comm_ops comm_none_ops;
#if HAVE_MPI
extern const struct comm_ops comm_mpi_ops;
#endif
#if HAVE_NCCL
extern const struct comm_ops comm_nccl_ops;
#endif

/* Whether comm_init would pick NCCL in a build that has it: WORLD_SIZE > 1 set (torchrun
 * style) and no MPI launcher. HAVE_NCCL comes from train/meson.build: ferry-cuda has NCCL,
 * ferry does not (it hands such runs to ferry-cuda, train_cmd.c). */
bool comm_wants_nccl(void);
/* Picks MPI when the process was started by mpirun/srun (and MPI was built in), else NCCL when
 * WORLD_SIZE > 1 is set (torchrun style, NCCL built in), else none. */
int comm_init(struct comm *c, int *argc, char ***argv);
void comm_done(struct comm *c);
/* buf = mean over ranks of buf: a sum, then one multiplication by 1/world_size. */
void comm_allreduce_mean(struct comm *c, float *buf, size_t n);
void comm_barrier(struct comm *c);
/* differs[i] = 1 where v[i] is not the same on every rank, else 0: the same answer on every
 * rank, from one collective. 0, or -EINVAL for n > COMM_DIFFERING_MAX (the same on every rank
 * as n is the code's; no allocation that could fail on one rank alone). */
#define COMM_DIFFERING_MAX 128
int comm_differing(struct comm *c, const uint64_t *v, size_t n, unsigned char *differs);

#endif
