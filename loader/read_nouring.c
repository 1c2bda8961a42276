/* Stand-in for read_uring.c when liburing is absent: the loader then reads with pread. */
#include "config.h"

#include <errno.h>

#include "loader/loader_i.h"

int read_uring_new(struct read_uring **out, uint32_t depth)
{
	*out = NULL;
	return -ENOSYS;
}

void read_uring_free(struct read_uring *u)
{
}

int read_uring_run(struct read_uring *u, struct read_op *ops, uint32_t nr_ops)
{
	return -ENOSYS;
}
