/* Unit tests for comm_choose (train/comm.c): which collective ranks use, for every launcher,
 * CPU or GPU, and builds with and without MPI and NCCL; one clear line where the build cannot
 * serve the ranks (rather than each rank training alone). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "train/comm.h"

static struct launch launch_of(enum launch_kind kind, const char *name, int world, bool mpi)
{
	return (struct launch){ .kind = kind,
		.name = name,
		.world_size = world,
		.mpi = mpi,
		.local_world_size = world };
}

static const char *refused(const struct launch *l, bool gpu, bool have_mpi, bool have_nccl)
{
	static char err[512];
	err[0] = '\0';
	cr_assert_eq(comm_choose(l, gpu, have_mpi, have_nccl, err, sizeof(err)), -EINVAL);
	cr_assert(err[0] && !strchr(err, '\n'), "not one line: '%s'", err);
	return err;
}

Test(comm, gpu_ranks_use_nccl_under_every_launcher)
{
	struct launch ls[] = {
		launch_of(LAUNCH_OPEN_MPI, "mpirun (Open MPI)", 2, true),
		launch_of(LAUNCH_HYDRA, "mpiexec (MPICH/Hydra)", 2, true),
		launch_of(LAUNCH_SLURM, "srun (Slurm)", 2, true),
		launch_of(LAUNCH_TORCHRUN, "torchrun", 2, false),
		launch_of(LAUNCH_BY_HAND, "RANK/WORLD_SIZE set by hand", 2, false),
	};
	for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++) {
		cr_expect_eq(comm_choose(&ls[i], true, true, true, NULL, 0), COMM_NCCL, "%s",
			ls[i].name);
		cr_expect_eq(comm_choose(&ls[i], true, false, true, NULL, 0), COMM_NCCL, "%s",
			ls[i].name);
	}
}

Test(comm, cpu_ranks_use_mpi_under_mpi_launchers)
{
	struct launch l = launch_of(LAUNCH_SLURM, "srun (Slurm)", 4, true);
	cr_expect_eq(comm_choose(&l, false, true, true, NULL, 0), COMM_MPI);
	l = launch_of(LAUNCH_OPEN_MPI, "mpirun (Open MPI)", 1, true);
	cr_expect_eq(comm_choose(&l, false, true, false, NULL, 0), COMM_MPI);
}

Test(comm, one_process_needs_nothing)
{
	struct launch l = launch_of(LAUNCH_SINGLE, "one process", 1, false);
	cr_expect_eq(comm_choose(&l, false, false, false, NULL, 0), COMM_NONE);
	cr_expect_eq(comm_choose(&l, true, false, false, NULL, 0), COMM_NONE);
	l = launch_of(LAUNCH_OPEN_MPI, "mpirun (Open MPI)", 1, true);
	cr_expect_eq(comm_choose(&l, true, true, true, NULL, 0), COMM_NONE);
}

Test(comm, cpu_ranks_without_mpi_in_the_build_are_refused_not_trained_alone)
{
	struct launch l = launch_of(LAUNCH_SLURM, "srun (Slurm)", 4, true);
	const char *err = refused(&l, false, false, true);
	cr_expect(strstr(err, "4 CPU ranks started by srun (Slurm), but this ferry was built "
			      "without MPI"),
		"%s", err);
}

Test(comm, cpu_ranks_under_torchrun_variables_are_refused)
{
	struct launch l = launch_of(LAUNCH_TORCHRUN, "torchrun", 2, false);
	const char *err = refused(&l, false, true, true);
	cr_expect(strstr(err, "start them with mpirun or srun"), "%s", err);
	l = launch_of(LAUNCH_BY_HAND, "RANK/WORLD_SIZE set by hand", 2, false);
	err = refused(&l, false, true, false);
	cr_expect(strstr(err, "2 CPU ranks started by RANK/WORLD_SIZE set by hand"), "%s", err);
}

Test(comm, gpu_ranks_without_nccl_in_the_build_are_refused)
{
	struct launch l = launch_of(LAUNCH_TORCHRUN, "torchrun", 8, false);
	const char *err = refused(&l, true, true, false);
	cr_expect(strstr(err, "8 GPU ranks started by torchrun talk over NCCL"), "%s", err);
}
