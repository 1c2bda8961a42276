/* train/: the MPI collective for data-parallel CPU training (one process per rank, started by
 * mpirun). MPI_Allreduce with a fixed world size reduces in the same order on every call, so
 * multi-rank runs stay reproducible. */
#include "config.h"

#include "train/comm.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

static int mpi_init(struct comm *c, int *argc, char ***argv)
{
	int inited = 0;
	MPI_Initialized(&inited);
	if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS)
		return -EIO;
	MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
	MPI_Comm_size(MPI_COMM_WORLD, &c->world_size);
	return 0;
}

static void mpi_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	/* MPI counts are int: large models go in pieces */
	while (n > 0) {
		int count = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
		buf += count;
		n -= (size_t)count;
	}
}

static void mpi_allreduce_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	while (n > 0) {
		int count = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
		buf += count;
		n -= (size_t)count;
	}
}

static void mpi_barrier(struct comm *c)
{
	MPI_Barrier(MPI_COMM_WORLD);
}

static void mpi_done(struct comm *c)
{
	int finalized = 0;
	MPI_Finalized(&finalized);
	if (!finalized)
		MPI_Finalize();
}

static void mpi_abort_all(struct comm *c, int status)
{
	if (c->world_size == 1) {
		MPI_Finalize();
		exit(status);
	}
	MPI_Abort(MPI_COMM_WORLD, status);
	exit(status);
}

const struct comm_ops comm_mpi_ops = {
	.name = "mpi",
	.init = mpi_init,
	.allreduce_sum = mpi_allreduce_sum,
	.barrier = mpi_barrier,
	.allreduce_max_u64 = mpi_allreduce_max_u64,
	.done = mpi_done,
	.abort_all = mpi_abort_all,
};
