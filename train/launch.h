/* train/: where this process sits in a multi-process job, read from the variables its launcher
 * set: Open MPI's mpirun, MPICH/Hydra, Slurm's srun, torchrun, or the torchrun set by hand.
 * comm.c picks the collective from it; the GPU trainer picks its device by local rank. */
#ifndef FERRY_TRAIN_LAUNCH_H
#define FERRY_TRAIN_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum launch_kind {
	LAUNCH_SINGLE,   /* no launcher: one process */
	LAUNCH_OPEN_MPI, /* OMPI_COMM_WORLD_* */
	LAUNCH_HYDRA,    /* MPICH/Hydra (and Intel MPI): PMI_RANK, PMI_SIZE, MPI_LOCALRANKID */
	LAUNCH_SLURM,    /* a task of an srun step: SLURM_PROCID, SLURM_STEP_NUM_TASKS, ... */
	LAUNCH_TORCHRUN, /* RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, from torchrun */
	LAUNCH_BY_HAND,  /* the same variables without torchrun's own (TORCHELASTIC_*) */
};

/* Filled by launch_read; every field is valid after it, whatever the launcher. */
struct launch {
	enum launch_kind kind;
	const char *name;     /* the launcher in words, for messages: "mpirun (Open MPI)", ... */
	int rank, world_size; /* 0 <= rank < world_size */
	/* on this node: 0 <= local_rank < local_world_size; local_world_size 0 where the launcher
	 * does not say (LOCAL_RANK without LOCAL_WORLD_SIZE, an srun step without a task count
	 * per node) */
	int local_rank, local_world_size;
	/* started by a launcher an MPI library can join (Open MPI, Hydra, srun's PMI): MPI_Init
	 * then sees the same ranks */
	bool mpi;
	/* torchrun and by hand: MASTER_ADDR and MASTER_PORT, "" and 0 when not set */
	char master_addr[256];
	int master_port;
	/* the TCP rendezvous of GPU ranks without MPI (rendezvous.h): FERRY_RENDEZVOUS_PORT, else
	 * MASTER_PORT + 1 (torchrun's own store listens on MASTER_PORT), else 0 */
	int rendezvous_port;
	/* FERRY_RENDEZVOUS_TIMEOUT: seconds a rank waits for the others to arrive, default 120 */
	int rendezvous_timeout_s;
	int restart_count; /* TORCHELASTIC_RESTART_COUNT: torchrun's restarts so far, else 0 */
};

/* Reads the environment. 0, or -EINVAL with one line in err naming the variable: a value that
 * is not a whole number, a set that is missing a member (RANK without WORLD_SIZE), or numbers
 * that contradict each other (rank >= world size, local rank >= local world size, ...).
 * Precedence, for processes that see several sets: torchrun's (it starts its workers itself,
 * even inside an srun step), then Open MPI, Hydra, an srun step, RANK/WORLD_SIZE by hand. */
int launch_read(struct launch *l, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
