/* train/: reading a process's place in its job from the launcher's variables (launch.h).
 * Each launcher has its own reader; all of them end in one check of the numbers. */
#include "config.h"

#include "train/launch.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool is_set(const char *name)
{
	const char *s = getenv(name);
	return s && *s;
}

/* *v = the variable's value, a whole number >= 0; 0 when set and valid, 1 when not set (v
 * unchanged), -EINVAL with the line in err otherwise. */
static int env_num(const char *name, int *v, char *err, size_t errlen)
{
	const char *s = getenv(name);
	char *end;
	long n;

	if (!s || !*s)
		return 1;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno || *end || end == s || n < 0 || n > INT_MAX)
		return fail(err, errlen, "%s=%s is not a whole number >= 0", name, s);
	*v = (int)n;
	return 0;
}

/* Like env_num, but a variable that is not set is an error too: a launcher's set is whole. */
static int env_need(const char *name, int *v, const char *set, char *err, size_t errlen)
{
	int rc = env_num(name, v, err, errlen);
	if (rc == 1)
		return fail(err, errlen, "%s is not set, but other variables of %s are", name, set);
	return rc;
}

/* Slurm's task counts per node: "2(x3),1" is 2 tasks on each of nodes 0-2, then 1 on node 3.
 * The count of node, or 0 when the list does not parse or does not reach it. */
static int slurm_tasks_on_node(const char *list, int node)
{
	const char *p = list;
	while (p && *p) {
		char *end;
		long n = strtol(p, &end, 10), times = 1;
		if (end == p || n <= 0 || n > INT_MAX)
			return 0;
		p = end;
		if (strncmp(p, "(x", 2) == 0) {
			times = strtol(p + 2, &end, 10);
			if (end == p + 2 || *end != ')' || times <= 0)
				return 0;
			p = end + 1;
		}
		if (node < times)
			return (int)n;
		node -= (int)times;
		if (*p == ',')
			p++;
		else if (*p)
			return 0;
	}
	return 0;
}

static int read_open_mpi(struct launch *l, char *err, size_t errlen)
{
	const char *set = "Open MPI's mpirun (OMPI_COMM_WORLD_*)";
	int rc;
	l->kind = LAUNCH_OPEN_MPI;
	l->name = "mpirun (Open MPI)";
	l->mpi = true;
	if ((rc = env_need("OMPI_COMM_WORLD_RANK", &l->rank, set, err, errlen)) < 0 ||
		(rc = env_need("OMPI_COMM_WORLD_SIZE", &l->world_size, set, err, errlen)) < 0 ||
		(rc = env_need("OMPI_COMM_WORLD_LOCAL_RANK", &l->local_rank, set, err, errlen)) <
			0 ||
		(rc = env_need("OMPI_COMM_WORLD_LOCAL_SIZE", &l->local_world_size, set, err,
			 errlen)) < 0)
		return rc;
	return 0;
}

/* An srun task of this step: its SLURM_PROCID and SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) equal
 * PMI_RANK and PMI_SIZE. Hydra over Slurm starts its proxies with srun, so there they do not. */
static bool same_as_slurm_task(int rank, int world)
{
	int procid = -1, ntasks = -1;
	char err[8];
	if (env_num("SLURM_PROCID", &procid, err, sizeof(err)) != 0)
		return false;
	if (env_num("SLURM_STEP_NUM_TASKS", &ntasks, err, sizeof(err)) != 0 &&
		env_num("SLURM_NTASKS", &ntasks, err, sizeof(err)) != 0)
		return false;
	return procid == rank && ntasks == world;
}

static int read_slurm_local(struct launch *l, char *err, size_t errlen);

static int read_hydra(struct launch *l, char *err, size_t errlen)
{
	const char *set = "MPICH/Hydra (PMI_*)";
	int rc;
	l->kind = LAUNCH_HYDRA;
	l->name = "mpiexec (MPICH/Hydra)";
	l->mpi = true;
	if ((rc = env_need("PMI_RANK", &l->rank, set, err, errlen)) < 0 ||
		(rc = env_need("PMI_SIZE", &l->world_size, set, err, errlen)) < 0)
		return rc;
	rc = env_num("MPI_LOCALRANKID", &l->local_rank, err, errlen);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		if ((rc = env_num("MPI_LOCALNRANKS", &l->local_world_size, err, errlen)) < 0)
			return rc;
		return 0;
	}
	/* srun's own PMI (--mpi=pmi2) sets PMI_RANK without Hydra's local variables */
	if (same_as_slurm_task(l->rank, l->world_size))
		return read_slurm_local(l, err, errlen);
	if (l->world_size > 1)
		return fail(err, errlen,
			"PMI_RANK is set but MPI_LOCALRANKID is not: this rank's place on its node "
			"(and so its GPU) is unknown");
	return 0;
}

static int read_slurm_local(struct launch *l, char *err, size_t errlen)
{
	const char *set = "an srun step (SLURM_*)";
	const char *list;
	int node = 0, rc;
	if ((rc = env_need("SLURM_LOCALID", &l->local_rank, set, err, errlen)) < 0 ||
		(rc = env_num("SLURM_NODEID", &node, err, errlen)) < 0)
		return rc;
	list = getenv("SLURM_STEP_TASKS_PER_NODE");
	if (!list)
		list = getenv("SLURM_TASKS_PER_NODE");
	l->local_world_size = list ? slurm_tasks_on_node(list, node) : 0;
	if (l->local_world_size == 0 &&
		(rc = env_num("SLURM_NTASKS_PER_NODE", &l->local_world_size, err, errlen)) < 0)
		return rc;
	return 0;
}

static int read_slurm(struct launch *l, char *err, size_t errlen)
{
	const char *set = "an srun step (SLURM_*)";
	int rc;
	l->kind = LAUNCH_SLURM;
	l->name = "srun (Slurm)";
	l->mpi = true;
	if ((rc = env_need("SLURM_PROCID", &l->rank, set, err, errlen)) < 0)
		return rc;
	rc = env_num("SLURM_STEP_NUM_TASKS", &l->world_size, err, errlen);
	if (rc == 1)
		rc = env_need("SLURM_NTASKS", &l->world_size, set, err, errlen);
	if (rc < 0)
		return rc;
	return read_slurm_local(l, err, errlen);
}

/* torchrun's set, or the same by hand. By hand on one node, LOCAL_RANK and LOCAL_WORLD_SIZE may
 * be left out: they are then RANK and WORLD_SIZE. */
static int read_torchrun(struct launch *l, bool torchrun, char *err, size_t errlen)
{
	const char *set = torchrun ? "torchrun" : "RANK/WORLD_SIZE";
	const char *addr = getenv("MASTER_ADDR");
	int rc;
	l->kind = torchrun ? LAUNCH_TORCHRUN : LAUNCH_BY_HAND;
	l->name = torchrun ? "torchrun" : "RANK/WORLD_SIZE set by hand";
	if ((rc = env_need("RANK", &l->rank, set, err, errlen)) < 0 ||
		(rc = env_need("WORLD_SIZE", &l->world_size, set, err, errlen)) < 0)
		return rc;
	rc = torchrun ? env_need("LOCAL_RANK", &l->local_rank, set, err, errlen)
		      : env_num("LOCAL_RANK", &l->local_rank, err, errlen);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		l->local_rank = l->rank;
		l->local_world_size = l->world_size;
	} else if ((rc = env_num("LOCAL_WORLD_SIZE", &l->local_world_size, err, errlen)) < 0) {
		return rc;
	}
	if ((rc = env_num("TORCHELASTIC_RESTART_COUNT", &l->restart_count, err, errlen)) < 0)
		return rc;
	if (addr && *addr) {
		if (strlen(addr) >= sizeof(l->master_addr))
			return fail(err, errlen, "MASTER_ADDR is longer than %zu bytes",
				sizeof(l->master_addr) - 1);
		strcpy(l->master_addr, addr);
	}
	if ((rc = env_num("MASTER_PORT", &l->master_port, err, errlen)) < 0)
		return rc;
	if (rc == 0 && (l->master_port < 1 || l->master_port > 65535))
		return fail(err, errlen, "MASTER_PORT=%d is not a TCP port (1 to 65535)",
			l->master_port);
	if (l->master_port > 0 && l->master_port < 65535)
		l->rendezvous_port = l->master_port + 1;
	return 0;
}

static int check(const struct launch *l, char *err, size_t errlen)
{
	if (l->world_size < 1)
		return fail(err, errlen, "%s: the world size is %d; it must be at least 1", l->name,
			l->world_size);
	if (l->rank >= l->world_size)
		return fail(err, errlen, "%s: rank %d is not below the world size %d", l->name,
			l->rank, l->world_size);
	if (l->local_world_size > l->world_size)
		return fail(err, errlen, "%s: %d ranks on this node, but the world size is %d",
			l->name, l->local_world_size, l->world_size);
	if (l->local_world_size > 0 && l->local_rank >= l->local_world_size)
		return fail(err, errlen,
			"%s: local rank %d is not below the ranks on this node, %d", l->name,
			l->local_rank, l->local_world_size);
	return 0;
}

int launch_read(struct launch *l, char *err, size_t errlen)
{
	int rc = 0;
	memset(l, 0, sizeof(*l));
	l->kind = LAUNCH_SINGLE;
	l->name = "one process";
	l->world_size = 1;
	if (is_set("TORCHELASTIC_RUN_ID") || is_set("TORCHELASTIC_RESTART_COUNT"))
		rc = read_torchrun(l, true, err, errlen);
	else if (is_set("OMPI_COMM_WORLD_SIZE") || is_set("OMPI_COMM_WORLD_RANK"))
		rc = read_open_mpi(l, err, errlen);
	else if (is_set("PMI_RANK") || is_set("PMI_SIZE"))
		rc = read_hydra(l, err, errlen);
	else if (is_set("SLURM_PROCID") &&
		 (is_set("SLURM_STEP_NUM_TASKS") || is_set("SLURM_STEP_ID") ||
			 is_set("SLURM_STEPID")))
		rc = read_slurm(l, err, errlen);
	else if (is_set("RANK") || is_set("WORLD_SIZE"))
		rc = read_torchrun(l, false, err, errlen);
	else
		l->local_world_size = 1;
	if (rc < 0)
		return rc;
	if ((rc = env_num("FERRY_RENDEZVOUS_PORT", &l->rendezvous_port, err, errlen)) < 0)
		return rc;
	if (rc == 0 && (l->rendezvous_port < 1 || l->rendezvous_port > 65535))
		return fail(err, errlen, "FERRY_RENDEZVOUS_PORT=%d is not a TCP port (1 to 65535)",
			l->rendezvous_port);
	l->rendezvous_timeout_s = 120;
	if ((rc = env_num("FERRY_RENDEZVOUS_TIMEOUT", &l->rendezvous_timeout_s, err, errlen)) < 0)
		return rc;
	if (rc == 0 && (l->rendezvous_timeout_s < 1 || l->rendezvous_timeout_s > 86400))
		return fail(err, errlen,
			"FERRY_RENDEZVOUS_TIMEOUT=%d is not between 1 and 86400 seconds",
			l->rendezvous_timeout_s);
	return check(l, err, errlen);
}
