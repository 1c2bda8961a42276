/* A test driver for the launch (train/launch.c) and the NCCL id's handout without a GPU
 * (tests/integ/train_ranks_under_mpirun_or_torchrun_variables_start_or_say_why.sh): prints what
 * launch_read found, then, with "share", hands 128 bytes from rank 0 to every rank the way GPU
 * ranks hand out the NCCL id (MPI_Bcast under an MPI launcher, else the TCP rendezvous) and
 * prints a hash of what this rank holds: the same on every rank when it worked. Errors: one
 * line, exit 1. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "train/comm.h"

int main(int argc, char **argv)
{
	struct comm c = { 0 };
	unsigned char id[128] = { 0 };
	char err[512] = "";
	uint64_t h = 1469598103934665603ull;
	int rc;

	if (argc > 2 || (argc == 2 && strcmp(argv[1], "share") != 0)) {
		fprintf(stderr, "usage: launch_driver [share]\n");
		return 2;
	}
	if (launch_read(&c.launch, err, sizeof(err)) < 0) {
		fprintf(stderr, "launch_driver: %s\n", err);
		return 1;
	}
	printf("rank %d of %d, local rank %d of %d, %s, mpi %d, restart %d, rendezvous port %d\n",
		c.launch.rank, c.launch.world_size, c.launch.local_rank, c.launch.local_world_size,
		c.launch.name, c.launch.mpi, c.launch.restart_count, c.launch.rendezvous_port);
	if (argc == 1)
		return 0;
	/* rank 0's bytes differ from run to run, so an old answer cannot pass */
	if (c.launch.rank == 0)
		for (size_t i = 0; i < sizeof(id); i++)
			id[i] = (unsigned char)((unsigned)getpid() * 2654435761u >> (i % 24));
	c.share_id = comm_share_id_tcp;
#if HAVE_MPI
	if (c.launch.mpi)
		c.share_id = comm_mpi_share_id;
#endif
	rc = c.share_id(&c, id, sizeof(id), err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "launch_driver: %s\n", err);
		return 1;
	}
	for (size_t i = 0; i < sizeof(id); i++)
		h = (h ^ id[i]) * 1099511628211ull;
	printf("rank %d holds id %016llx\n", c.launch.rank, (unsigned long long)h);
	return 0;
}
