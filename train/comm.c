/* train/: choosing the collective backend (comm_none.c, comm_mpi.c) and the helpers on top. */
#include "config.h"

#include "train/comm.h"

#include <errno.h>
#include <stdlib.h>

/* Launchers that set these: Open MPI's mpirun, PMIx, MPICH/Hydra and Slurm's srun. */
static int launched_by_mpi(void)
{
	static const char *vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE",
		"SLURM_NTASKS" };
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (getenv(vars[i]))
			return 1;
	return 0;
}

bool comm_wants_nccl(void)
{
	const char *ws = getenv("WORLD_SIZE");
	return !(HAVE_MPI && launched_by_mpi()) && ws && atoi(ws) > 1;
}

int comm_init(struct comm *c, int *argc, char ***argv)
{
	c->ops = &comm_none_ops;
#if HAVE_MPI
	if (launched_by_mpi())
		c->ops = &comm_mpi_ops;
#endif
#if HAVE_NCCL
	if (comm_wants_nccl())
		c->ops = &comm_nccl_ops;
#endif
	return c->ops->init(c, argc, argv);
}

void comm_done(struct comm *c)
{
	if (c && c->ops)
		c->ops->done(c);
}

void comm_allreduce_mean(struct comm *c, float *buf, size_t n)
{
	if (c->world_size == 1)
		return;
	c->ops->allreduce_sum(c, buf, n);
	float inv = 1.0f / (float)c->world_size;
	for (size_t i = 0; i < n; i++)
		buf[i] *= inv;
}

void comm_barrier(struct comm *c)
{
	c->ops->barrier(c);
}

/* One maximum over [v, ~v] gives both max(v) and ~min(v): v is the same everywhere exactly
 * where they meet. */
int comm_differing(struct comm *c, const uint64_t *v, size_t n, unsigned char *differs)
{
	uint64_t buf[2 * COMM_DIFFERING_MAX];
	if (n > COMM_DIFFERING_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		buf[i] = v[i];
		buf[n + i] = ~v[i];
	}
	if (c->world_size > 1)
		c->ops->allreduce_max_u64(c, buf, 2 * n);
	for (size_t i = 0; i < n; i++)
		differs[i] = buf[i] != ~buf[n + i];
	return 0;
}
