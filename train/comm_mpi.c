/* train/: the MPI collective for data-parallel CPU training (one process per rank, started by
 * mpirun or srun; comm.c), and the NCCL id's handout for GPU ranks under those launchers.
 * MPI_Allreduce with a fixed world size reduces in the same order on every call, so multi-rank
 * runs stay reproducible. */
#include "config.h"

#include "train/comm.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MPI_Init, and a check that MPI sees the ranks the launcher started: an MPI library that
 * cannot reach its launcher (srun without --mpi=pmix or pmi2, another MPI's mpiexec) starts
 * every process as a world of its own, and they would each train alone. */
static int mpi_start(struct comm *c, int *argc, char ***argv, char *err, size_t errlen)
{
	const struct launch *l = &c->launch;
	int inited = 0, rank = 0, world = 0;
	MPI_Initialized(&inited);
	if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS) {
		snprintf(err, errlen, "MPI_Init failed under %s", l->name);
		return -EIO;
	}
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world);
	if (world != l->world_size || rank != l->rank) {
		snprintf(err, errlen,
			"MPI sees rank %d of %d, but %s started rank %d of %d: this MPI library "
			"cannot reach the launcher (srun needs --mpi=pmix or pmi2; mpiexec must be "
			"the library's own)",
			rank, world, l->name, l->rank, l->world_size);
		MPI_Finalize();
		return -EINVAL;
	}
	return 0;
}

static int mpi_init(struct comm *c, int *argc, char ***argv, char *err, size_t errlen)
{
	int rc = mpi_start(c, argc, argv, err, errlen);
	if (rc < 0)
		return rc;
	c->rank = c->launch.rank;
	c->world_size = c->launch.world_size;
	return 0;
}

/* GPU ranks: MPI only carries the NCCL id, then ends, so no MPI progress thread or host
 * buffers stay beside NCCL. A rank that dies later still ends the job: the launcher (mpirun,
 * srun) watches its processes, not MPI. */
int comm_mpi_share_id(struct comm *c, void *buf, size_t n, char *err, size_t errlen)
{
	int rc = mpi_start(c, NULL, NULL, err, errlen);
	if (rc < 0)
		return rc;
	if (n > INT_MAX || MPI_Bcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
		snprintf(err, errlen, "MPI_Bcast of the NCCL id failed");
		rc = -EIO;
	}
	MPI_Finalize();
	return rc;
}

/* The MPI communicator of c: the world, or a sub-communicator of the grid (split) */
static MPI_Comm mc(const struct comm *c)
{
	return c->group ? *(MPI_Comm *)c->group : MPI_COMM_WORLD;
}

static void mpi_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	c->nr_bytes += n * sizeof(float);
	/* MPI counts are int: large models go in pieces */
	while (n > 0) {
		int count = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, mc(c));
		buf += count;
		n -= (size_t)count;
	}
}

static void mpi_allreduce_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	while (n > 0) {
		int count = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_UINT64_T, MPI_MAX, mc(c));
		buf += count;
		n -= (size_t)count;
	}
}

/* A slice over INT_MAX floats (8 GiB a rank) would need a derived datatype; no model here comes
 * near, so it ends the job rather than reduce the wrong bytes. */
static int slice_count(struct comm *c, size_t count)
{
	if (count > (size_t)INT_MAX) {
		fprintf(stderr, "comm mpi: a slice of %zu floats is beyond MPI's int count\n",
			count);
		MPI_Abort(MPI_COMM_WORLD, 1);
		exit(1);
	}
	return (int)count;
}

/* MPI_IN_PLACE leaves the sum of slice `rank` at the start of buf; it moves to its place. */
static void mpi_reduce_scatter_sum(struct comm *c, float *buf, size_t count)
{
	int n = slice_count(c, count);
	c->nr_bytes += count * (size_t)c->world_size * sizeof(float);
	MPI_Reduce_scatter_block(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, mc(c));
	if (c->rank > 0)
		memmove(buf + (size_t)c->rank * count, buf, count * sizeof(float));
}

static void mpi_allgather(struct comm *c, float *buf, size_t count)
{
	int n = slice_count(c, count);
	c->nr_bytes += count * (size_t)c->world_size * sizeof(float);
	MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, n, MPI_FLOAT, mc(c));
}

/* The requests in flight between start_allreduce_sum and wait_all: a bucket of the gradients is
 * a dozen ranges (one per tensor), a step a few dozen requests. */
struct mpi_pending {
	MPI_Request *reqs;
	int nr, cap;
};

static void mpi_start_allreduce_sum(struct comm *c, float *buf, size_t n)
{
	struct mpi_pending *p = c->pending;
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			goto oom;
		c->pending = p;
	}
	c->nr_bytes += n * sizeof(float);
	while (n > 0) {
		int count = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		if (p->nr == p->cap) {
			int cap = p->cap ? 2 * p->cap : 64;
			MPI_Request *reqs = realloc(p->reqs, (size_t)cap * sizeof(*reqs));
			if (!reqs)
				goto oom;
			p->reqs = reqs;
			p->cap = cap;
		}
		MPI_Iallreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, mc(c),
			&p->reqs[p->nr++]);
		buf += count;
		n -= (size_t)count;
	}
	return;
oom:
	/* a rank that skipped a reduction would leave the others in it */
	fprintf(stderr, "comm mpi: out of memory for the requests of a reduction\n");
	MPI_Abort(MPI_COMM_WORLD, 1);
	exit(1);
}

static bool mpi_progress(struct comm *c)
{
	struct mpi_pending *p = c->pending;
	int done = 1;
	if (p && p->nr > 0)
		MPI_Testall(p->nr, p->reqs, &done, MPI_STATUSES_IGNORE);
	return done;
}

static void mpi_wait_all(struct comm *c)
{
	struct mpi_pending *p = c->pending;
	if (!p)
		return;
	MPI_Waitall(p->nr, p->reqs, MPI_STATUSES_IGNORE);
	p->nr = 0;
}

static void mpi_barrier(struct comm *c)
{
	MPI_Barrier(mc(c));
}

/* MPI_Comm_split: Open MPI orders the new group by key, then by the old rank */
static int mpi_split(struct comm *c, int color, int key, struct comm *out, char *err, size_t errlen)
{
	MPI_Comm *sub = malloc(sizeof(*sub));
	if (!sub) {
		snprintf(err, errlen, "out of memory for a communicator");
		return -ENOMEM;
	}
	if (MPI_Comm_split(mc(c), color, key, sub) != MPI_SUCCESS) {
		free(sub);
		snprintf(err, errlen, "MPI_Comm_split failed");
		return -EIO;
	}
	*out = (struct comm){ .ops = c->ops, .launch = c->launch, .group = sub };
	MPI_Comm_rank(*sub, &out->rank);
	MPI_Comm_size(*sub, &out->world_size);
	return 0;
}

static void mpi_done(struct comm *c)
{
	int finalized = 0;
	MPI_Finalized(&finalized);
	if (c->group) {
		if (!finalized)
			MPI_Comm_free(c->group);
		free(c->group);
		c->group = NULL;
	} else if (!finalized) {
		MPI_Finalize();
	}
	if (c->pending) {
		free(((struct mpi_pending *)c->pending)->reqs);
		free(c->pending);
		c->pending = NULL;
	}
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

/* One message a side, as MPI_BYTE: a pipeline's stream of a micro-batch (B*T*C floats) stays
 * far below INT_MAX bytes; beyond it the job ends rather than send a part. */
static void mpi_sendrecv(struct comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf,
	size_t rbytes, int src)
{
	if (sbytes > (size_t)INT_MAX || rbytes > (size_t)INT_MAX) {
		fprintf(stderr, "comm mpi: a message of %zu bytes is beyond MPI's int count\n",
			sbytes > rbytes ? sbytes : rbytes);
		MPI_Abort(MPI_COMM_WORLD, 1);
		exit(1);
	}
	MPI_Sendrecv(sbuf, dest < 0 ? 0 : (int)sbytes, MPI_BYTE, dest < 0 ? MPI_PROC_NULL : dest, 0,
		rbuf, src < 0 ? 0 : (int)rbytes, MPI_BYTE, src < 0 ? MPI_PROC_NULL : src, 0, mc(c),
		MPI_STATUS_IGNORE);
}

const struct comm_ops comm_mpi_ops = {
	.name = "mpi",
	.init = mpi_init,
	.allreduce_sum = mpi_allreduce_sum,
	.barrier = mpi_barrier,
	.allreduce_max_u64 = mpi_allreduce_max_u64,
	.reduce_scatter_sum = mpi_reduce_scatter_sum,
	.allgather = mpi_allgather,
	.start_allreduce_sum = mpi_start_allreduce_sum,
	.progress = mpi_progress,
	.wait_all = mpi_wait_all,
	.split = mpi_split,
	.done = mpi_done,
	.abort_all = mpi_abort_all,
	.sendrecv = mpi_sendrecv,
};
