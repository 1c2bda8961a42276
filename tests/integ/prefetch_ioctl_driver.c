/* Sends one FERRY_IOC_PREFETCH on FILE with the ranges given (OFFSET:LENGTH ...) and prints the
 * answer on one line, or the error; for the tests of tests/integ/ that check the call. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"

/* The same request number with another size: what a caller built against another struct
 * sends. */
struct small_prefetch {
	uint32_t nr_ranges, flags;
};
#define SMALL_IOC_PREFETCH _IOWR('f', 2, struct small_prefetch)

int main(int argc, char **argv)
{
	static struct ferry_prefetch p;
	long nr = -1;
	int fd, i = 2, ret;

	if (argc < 2) {
		fprintf(stderr, "usage: prefetch_ioctl_driver FILE [--nr N] [--flags F] [--small] "
				"OFFSET:LENGTH...\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "prefetch_ioctl_driver: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--small")) {
			struct small_prefetch s = { 0, 0 };

			ret = ioctl(fd, SMALL_IOC_PREFETCH, &s);
			printf("%s\n", ret < 0 ? strerror(errno) : "ok");
			return ret < 0 ? 1 : 0;
		}
		if (i + 1 >= argc)
			return 2;
		if (!strcmp(argv[i], "--nr"))
			nr = strtol(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--flags"))
			p.flags = (uint32_t)strtoul(argv[++i], NULL, 0);
		else
			return 2;
	}
	for (; i < argc && p.nr_ranges < FERRY_PREFETCH_MAX_RANGES; i++) {
		struct ferry_prefetch_range *r = &p.ranges[p.nr_ranges++];

		if (sscanf(argv[i], "%" SCNu64 ":%" SCNu64, &r->offset, &r->length) != 2) {
			fprintf(stderr, "prefetch_ioctl_driver: bad range %s\n", argv[i]);
			return 2;
		}
	}
	if (nr >= 0)
		p.nr_ranges = (uint32_t)nr;
	if (ioctl(fd, FERRY_IOC_PREFETCH, &p) < 0) {
		printf("%s\n", strerror(errno));
		return 1;
	}
	printf("nr_done %" PRIu32 " next_offset %" PRIu64 " nr_started %" PRIu32
	       " nr_chunks %" PRIu32 " chunk_bytes %" PRIu32 " file_size %" PRIu64
	       " cache_max_bytes %" PRIu64 "\n",
		p.nr_done, p.next_offset, p.nr_started, p.nr_chunks, p.chunk_bytes, p.file_size,
		p.cache_max_bytes);
	close(fd);
	return 0;
}
