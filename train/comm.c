/* train/: choosing the collective backend (comm_none.c, comm_mpi.c, comm_nccl.c) from the
 * launch (launch.h), and the helpers on top. */
#include "config.h"

#include "train/comm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "train/rendezvous.h"
#include "train/settings.h"

static int refuse(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int comm_choose(const struct launch *l, bool gpu, bool have_mpi, bool have_nccl, char *err,
	size_t errlen)
{
	if (gpu) {
		if (l->world_size == 1)
			return COMM_NONE;
		if (!have_nccl)
			return refuse(err, errlen,
				"%d GPU ranks started by %s talk over NCCL, and this ferry was built "
				"without it",
				l->world_size, l->name);
		return COMM_NCCL;
	}
	if (l->mpi && have_mpi)
		return COMM_MPI;
	if (l->world_size == 1)
		return COMM_NONE;
	if (!have_mpi)
		return refuse(err, errlen,
			"%d CPU ranks started by %s, but this ferry was built without MPI: each "
			"would train alone (rebuild with -Dmpi=enabled, or start one process)",
			l->world_size, l->name);
	return refuse(err, errlen,
		"%d CPU ranks started by %s: CPU ranks talk over MPI, so start them with mpirun or "
		"srun (RANK/WORLD_SIZE without an MPI launcher are for --device cuda)",
		l->world_size, l->name);
}

/* rank 0 serves the bytes on the rendezvous port (launch.h) */
int comm_share_id_tcp(struct comm *c, void *buf, size_t n, char *err, size_t errlen)
{
	const struct launch *l = &c->launch;
	if (l->world_size == 1)
		return 0;
	if (l->rendezvous_port == 0)
		return refuse(err, errlen,
			"%d GPU ranks started by %s meet over TCP: set MASTER_ADDR and MASTER_PORT "
			"(the rendezvous takes MASTER_PORT + 1) or FERRY_RENDEZVOUS_PORT",
			l->world_size, l->name);
	return rendezvous_bcast(l->rank == 0 || l->master_addr[0] ? l->master_addr : NULL,
		l->rendezvous_port, l->rank, l->world_size, buf, n, l->rendezvous_timeout_s * 1000,
		err, errlen);
}

static void die(const char *what, const char *line) __attribute__((noreturn));
static void die(const char *what, const char *line)
{
	fprintf(stderr, "ferry train: %s: %s\n", what, line);
	exit(1);
}

/* lenient: a launch the build cannot serve runs as one process, for a command line that is
 * --help or wrong, so that the trainer says that (setup) rather than a launch error that
 * depends on what the command line meant. */
static int start(struct comm *c, int *argc, char ***argv, bool gpu, bool lenient)
{
	char err[512];
	int kind, rc;

	if (launch_read(&c->launch, err, sizeof(err)) < 0)
		die("launch", err);
	kind = comm_choose(&c->launch, gpu, HAVE_MPI, HAVE_NCCL, err, sizeof(err));
	if (kind < 0 && lenient)
		kind = COMM_NONE;
	if (kind < 0)
		die("launch", err);
	c->ops = &comm_none_ops;
	c->share_id = comm_share_id_tcp;
#if HAVE_MPI
	if (c->launch.mpi)
		c->share_id = comm_mpi_share_id;
	if (kind == COMM_MPI)
		c->ops = &comm_mpi_ops;
#endif
#if HAVE_NCCL
	if (kind == COMM_NCCL)
		c->ops = &comm_nccl_ops;
#endif
	err[0] = '\0';
	rc = c->ops->init(c, argc, argv, err, sizeof(err));
	if (rc < 0)
		die(c->ops->name, err[0] ? err : "cannot start");
	return 0;
}

int comm_init_ranks(struct comm *c, int *argc, char ***argv, bool gpu)
{
	return start(c, argc, argv, gpu, false);
}

int comm_init(struct comm *c, int *argc, char ***argv)
{
	struct train_settings s;
	struct train_opts o;
	char err[256];
	int rc = settings_parse_args(*argc, *argv, &s, &o, err, sizeof(err));

	return start(c, argc, argv, rc == 0 && o.cuda, rc != 0);
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
