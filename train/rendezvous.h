/* train/: a one-shot TCP rendezvous that hands a few bytes (the NCCL id) from rank 0 to every
 * rank of a job started without MPI (torchrun, or its variables by hand). Rank 0 listens; the
 * others connect, say who they are, and get the bytes once all of them have arrived. */
#ifndef FERRY_TRAIN_RENDEZVOUS_H
#define FERRY_TRAIN_RENDEZVOUS_H

#include <stddef.h>

/* the most bytes one rendezvous carries */
#define RENDEZVOUS_MAX_BYTES 4096

/* buf (n bytes): rank 0's goes to every rank of world. Rank 0 listens on every address at
 * port; the others connect to addr:port, retrying while rank 0 is not listening yet. Every rank
 * gives up after timeout_ms in all. 0, or -errno with one line in err: on rank 0 it names the
 * ranks that never arrived ("ranks 2, 3 never arrived within 5 s"), on the others whether rank
 * 0 was never reached or gave up (with its reason). A rank that arrives twice or with another
 * world size or size of buf ends it on rank 0 and on the ranks that had arrived. */
int rendezvous_bcast(const char *addr, int port, int rank, int world, void *buf, size_t n,
	int timeout_ms, char *err, size_t errlen);

#endif
