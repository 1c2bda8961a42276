/* Unit tests for train/launch.c: each launcher's variables as it sets them, the precedence when a
 * process sees several sets, and one clear line for sets that contradict themselves. Criterion
 * runs each test in a process of its own, so the environment is the test's. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "train/launch.h"

static void setup(void)
{
	clearenv();
}

TestSuite(launch, .init = setup);

/* "NAME=VALUE" pairs, NULL-terminated */
static void env(const char *const *vars)
{
	for (; *vars; vars++) {
		char name[128];
		const char *eq = strchr(*vars, '=');
		cr_assert(eq && (size_t)(eq - *vars) < sizeof(name));
		memcpy(name, *vars, (size_t)(eq - *vars));
		name[eq - *vars] = '\0';
		cr_assert_eq(setenv(name, eq + 1, 1), 0);
	}
}

static struct launch read_ok(void)
{
	struct launch l;
	char err[256] = "";
	cr_assert_eq(launch_read(&l, err, sizeof(err)), 0, "launch_read: %s", err);
	return l;
}

/* the error line, which must be one line naming what is wrong */
static const char *read_bad(void)
{
	static char err[256];
	struct launch l;
	err[0] = '\0';
	cr_assert_lt(launch_read(&l, err, sizeof(err)), 0, "launch_read accepted the set");
	cr_assert(err[0] && !strchr(err, '\n'), "not one line: '%s'", err);
	return err;
}

static void expect(const struct launch *l, enum launch_kind kind, int rank, int world, int lrank,
	int lworld, bool mpi)
{
	cr_expect_eq(l->kind, kind, "kind %d, expected %d", l->kind, kind);
	cr_expect_eq(l->rank, rank, "rank %d, expected %d", l->rank, rank);
	cr_expect_eq(l->world_size, world, "world %d, expected %d", l->world_size, world);
	cr_expect_eq(l->local_rank, lrank, "local rank %d, expected %d", l->local_rank, lrank);
	cr_expect_eq(l->local_world_size, lworld, "local world %d, expected %d",
		l->local_world_size, lworld);
	cr_expect_eq(l->mpi, mpi);
}

Test(launch, no_launcher_is_one_process)
{
	struct launch l = read_ok();
	expect(&l, LAUNCH_SINGLE, 0, 1, 0, 1, false);
	cr_expect_eq(l.rendezvous_port, 0);
	cr_expect_eq(l.rendezvous_timeout_s, 120);
}

Test(launch, open_mpi_mpirun)
{
	env((const char *const[]){ "OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=8",
		"OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=4", "PMIX_RANK=5",
		NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_OPEN_MPI, 5, 8, 1, 4, true);
}

Test(launch, mpich_hydra_local_rank_is_mpi_localrankid)
{
	env((const char *const[]){ "PMI_RANK=3", "PMI_SIZE=4", "MPI_LOCALRANKID=1",
		"MPI_LOCALNRANKS=2", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_HYDRA, 3, 4, 1, 2, true);
}

/* Hydra on a Slurm allocation starts its proxies with srun: the SLURM_* there are the
 * proxy's (one per node), not the rank's */
Test(launch, hydra_inside_slurm_takes_pmi_not_the_proxys_slurm_variables)
{
	env((const char *const[]){ "PMI_RANK=3", "PMI_SIZE=4", "MPI_LOCALRANKID=1",
		"MPI_LOCALNRANKS=2", "SLURM_PROCID=1", "SLURM_STEP_NUM_TASKS=2", "SLURM_NTASKS=2",
		"SLURM_LOCALID=0", "SLURM_STEP_ID=0", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_HYDRA, 3, 4, 1, 2, true);
}

Test(launch, srun_pmi2_without_hydra_local_rank_takes_slurm_localid)
{
	env((const char *const[]){ "PMI_RANK=3", "PMI_SIZE=4", "SLURM_PROCID=3",
		"SLURM_STEP_NUM_TASKS=4", "SLURM_LOCALID=1", "SLURM_NODEID=1",
		"SLURM_STEP_TASKS_PER_NODE=2(x2)", "SLURM_STEP_ID=0", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_HYDRA, 3, 4, 1, 2, true);
}

Test(launch, pmi_rank_without_any_local_rank_is_refused)
{
	env((const char *const[]){ "PMI_RANK=1", "PMI_SIZE=4", NULL });
	cr_expect(strstr(read_bad(), "MPI_LOCALRANKID"));
}

Test(launch, srun_step)
{
	env((const char *const[]){ "SLURM_PROCID=6", "SLURM_STEP_NUM_TASKS=7", "SLURM_NTASKS=7",
		"SLURM_LOCALID=0", "SLURM_NODEID=2", "SLURM_STEP_TASKS_PER_NODE=3(x2),1",
		"SLURM_STEP_ID=0", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_SLURM, 6, 7, 0, 1, true);
}

Test(launch, srun_step_without_a_task_list_takes_ntasks_per_node)
{
	env((const char *const[]){ "SLURM_PROCID=2", "SLURM_NTASKS=4", "SLURM_LOCALID=0",
		"SLURM_STEPID=3", "SLURM_NTASKS_PER_NODE=2", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_SLURM, 2, 4, 0, 2, true);
}

/* an sbatch script runs once, with SLURM_NTASKS of the allocation: no step, one process */
Test(launch, sbatch_script_outside_a_step_is_one_process)
{
	env((const char *const[]){ "SLURM_PROCID=0", "SLURM_NTASKS=8", "SLURM_LOCALID=0",
		"SLURM_JOB_ID=77", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_SINGLE, 0, 1, 0, 1, false);
}

Test(launch, torchrun)
{
	env((const char *const[]){ "RANK=3", "WORLD_SIZE=4", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=2",
		"GROUP_RANK=1", "MASTER_ADDR=node0", "MASTER_PORT=29500",
		"TORCHELASTIC_RESTART_COUNT=2", "TORCHELASTIC_RUN_ID=none", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_TORCHRUN, 3, 4, 1, 2, false);
	cr_expect_str_eq(l.master_addr, "node0");
	cr_expect_eq(l.master_port, 29500);
	cr_expect_eq(l.restart_count, 2);
	/* torchrun's store holds MASTER_PORT */
	cr_expect_eq(l.rendezvous_port, 29501);
}

/* srun starting one torchrun per node: the workers see the torchrun task's SLURM_PROCID */
Test(launch, torchrun_inside_srun_takes_torchruns_ranks)
{
	env((const char *const[]){ "RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=4",
		"MASTER_ADDR=node0", "MASTER_PORT=29500", "TORCHELASTIC_RESTART_COUNT=0",
		"SLURM_PROCID=1", "SLURM_STEP_NUM_TASKS=2", "SLURM_LOCALID=0", "SLURM_STEP_ID=0",
		NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_TORCHRUN, 5, 8, 1, 4, false);
}

Test(launch, torchrun_without_local_rank_is_refused)
{
	env((const char *const[]){ "RANK=0", "WORLD_SIZE=2", "TORCHELASTIC_RUN_ID=x", NULL });
	cr_expect(strstr(read_bad(), "LOCAL_RANK is not set"));
}

Test(launch, by_hand_on_one_node_local_rank_defaults_to_rank)
{
	env((const char *const[]){ "RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
		"MASTER_PORT=29500", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_BY_HAND, 1, 2, 1, 2, false);
	cr_expect_eq(l.rendezvous_port, 29501);
}

/* the ranks on the node are then unknown, not 1 (which local rank 1 would contradict) */
Test(launch, local_rank_without_local_world_size)
{
	env((const char *const[]){ "RANK=3", "WORLD_SIZE=4", "LOCAL_RANK=1", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_BY_HAND, 3, 4, 1, 0, false);
	clearenv();
	env((const char *const[]){ "PMI_RANK=3", "PMI_SIZE=4", "MPI_LOCALRANKID=1", NULL });
	l = read_ok();
	expect(&l, LAUNCH_HYDRA, 3, 4, 1, 0, true);
}

Test(launch, rendezvous_port_and_timeout_can_be_set)
{
	env((const char *const[]){ "RANK=0", "WORLD_SIZE=2", "MASTER_PORT=29500",
		"FERRY_RENDEZVOUS_PORT=40000", "FERRY_RENDEZVOUS_TIMEOUT=5", NULL });
	struct launch l = read_ok();
	cr_expect_eq(l.rendezvous_port, 40000);
	cr_expect_eq(l.rendezvous_timeout_s, 5);
}

Test(launch, open_mpi_takes_precedence_over_a_leftover_rank)
{
	env((const char *const[]){ "RANK=7", "WORLD_SIZE=9", "OMPI_COMM_WORLD_RANK=1",
		"OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_LOCAL_RANK=1",
		"OMPI_COMM_WORLD_LOCAL_SIZE=2", NULL });
	struct launch l = read_ok();
	expect(&l, LAUNCH_OPEN_MPI, 1, 2, 1, 2, true);
}

Test(launch, rank_at_or_above_world_size_is_refused)
{
	env((const char *const[]){ "RANK=2", "WORLD_SIZE=2", NULL });
	cr_expect(strstr(read_bad(), "rank 2 is not below the world size 2"), "%s", read_bad());
}

Test(launch, open_mpi_local_rank_at_or_above_local_size_is_refused)
{
	env((const char *const[]){ "OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=4",
		"OMPI_COMM_WORLD_LOCAL_RANK=2", "OMPI_COMM_WORLD_LOCAL_SIZE=2", NULL });
	cr_expect(strstr(read_bad(), "local rank 2 is not below"), "%s", read_bad());
}

Test(launch, more_ranks_on_a_node_than_in_the_world_is_refused)
{
	env((const char *const[]){ "PMI_RANK=0", "PMI_SIZE=2", "MPI_LOCALRANKID=0",
		"MPI_LOCALNRANKS=3", NULL });
	cr_expect(strstr(read_bad(), "3 ranks on this node, but the world size is 2"), "%s",
		read_bad());
}

Test(launch, world_size_zero_is_refused)
{
	env((const char *const[]){ "RANK=0", "WORLD_SIZE=0", NULL });
	cr_expect(strstr(read_bad(), "world size is 0"), "%s", read_bad());
}

Test(launch, rank_without_world_size_is_refused)
{
	env((const char *const[]){ "RANK=1", NULL });
	cr_expect(strstr(read_bad(), "WORLD_SIZE is not set"), "%s", read_bad());
}

Test(launch, open_mpi_set_missing_a_member_is_refused)
{
	env((const char *const[]){ "OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2", NULL });
	cr_expect(strstr(read_bad(), "OMPI_COMM_WORLD_LOCAL_RANK is not set"), "%s", read_bad());
}

Test(launch, a_value_that_is_not_a_number_is_named)
{
	env((const char *const[]){ "RANK=one", "WORLD_SIZE=2", NULL });
	cr_expect(strstr(read_bad(), "RANK=one is not a whole number"), "%s", read_bad());
}

Test(launch, a_negative_rank_is_refused)
{
	env((const char *const[]){ "SLURM_PROCID=-1", "SLURM_STEP_NUM_TASKS=2", "SLURM_LOCALID=0",
		"SLURM_STEP_ID=0", NULL });
	cr_expect(strstr(read_bad(), "SLURM_PROCID=-1"), "%s", read_bad());
}

Test(launch, bad_ports_are_refused)
{
	env((const char *const[]){ "RANK=0", "WORLD_SIZE=2", "MASTER_PORT=70000", NULL });
	cr_expect(strstr(read_bad(), "MASTER_PORT=70000 is not a TCP port"), "%s", read_bad());
	env((const char *const[]){ "MASTER_PORT=29500", "FERRY_RENDEZVOUS_PORT=0", NULL });
	cr_expect(strstr(read_bad(), "FERRY_RENDEZVOUS_PORT=0"), "%s", read_bad());
	env((const char *const[]){ "FERRY_RENDEZVOUS_PORT=1234", "FERRY_RENDEZVOUS_TIMEOUT=0",
		NULL });
	cr_expect(strstr(read_bad(), "FERRY_RENDEZVOUS_TIMEOUT=0"), "%s", read_bad());
}
