/* Tests of the cache's disk I/O backends: io_uring against its synchronous twin, on real
 * files under /tmp. */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/io.h"

static char tmp_dir[64];

static void tmp_setup(void)
{
	strcpy(tmp_dir, "/tmp/ferry-test-io-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp_dir));
}

static void tmp_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", tmp_dir);
}

static int tmp_file(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	return fd;
}

/* The backends under test; io_uring only where it is built and the kernel allows it. */
static const struct io_backend *backends[2];
static int nr_backends;

static void pick_backends(void)
{
	nr_backends = 0;
	backends[nr_backends++] = &io_sync_backend;
#if HAVE_IO_URING
	{
		/* The probe decides whether io_uring works here; FERRY_IO would hide it. */
		unsetenv("FERRY_IO");
		if (io_default() == &io_uring_backend)
			backends[nr_backends++] = &io_uring_backend;
		else
			cr_log_warn("io_uring not usable here; testing the sync backend only");
	}
#endif
}

static void setup(void)
{
	tmp_setup();
	pick_backends();
}

TestSuite(io, .init = setup, .fini = tmp_teardown);

/* A small deterministic generator, so a failure can be replayed. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

Test(io, backends_write_and_read_back_the_same_bytes_at_random_offsets)
{
	enum { FILE_BYTES = 4 << 20, NR_OPS = 300, MAX_OP = 300000 };
	unsigned char *oracle = calloc(1, FILE_BYTES);
	unsigned char *buf = malloc(MAX_OP), *got = malloc(MAX_OP);

	cr_assert(oracle && buf && got);
	for (int b = 0; b < nr_backends; b++) {
		const struct io_backend *io = backends[b];
		uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)b;
		char name[32];
		int fd;

		snprintf(name, sizeof(name), "rw-%s", io->name);
		fd = tmp_file(name);
		memset(oracle, 0, FILE_BYTES);
		cr_assert_eq(ftruncate(fd, FILE_BYTES), 0);
		for (int i = 0; i < NR_OPS; i++) {
			size_t len = 1 + rng_next(&seed) % MAX_OP;
			uint64_t off = rng_next(&seed) % (FILE_BYTES - len);

			for (size_t k = 0; k < len; k++)
				buf[k] = (unsigned char)rng_next(&seed);
			cr_assert_eq(io->pwrite(fd, buf, len, off), (ssize_t)len, "%s pwrite",
				io->name);
			memcpy(oracle + off, buf, len);
			/* Read back a random range with this backend; compare with the oracle. */
			len = 1 + rng_next(&seed) % MAX_OP;
			off = rng_next(&seed) % (FILE_BYTES - len);
			cr_assert_eq(io->pread(fd, got, len, off), (ssize_t)len);
			cr_assert_eq(memcmp(got, oracle + off, len), 0, "%s op %d", io->name, i);
		}
		cr_assert_eq(io->fdatasync(fd), 0);
		/* The whole file, read by the plain read(2) path, equals the oracle. */
		{
			unsigned char *all = malloc(FILE_BYTES);
			size_t done = 0;

			cr_assert_not_null(all);
			while (done < FILE_BYTES) {
				ssize_t n = pread(fd, all + done, FILE_BYTES - done, (off_t)done);

				cr_assert_gt(n, 0);
				done += (size_t)n;
			}
			cr_assert_eq(memcmp(all, oracle, FILE_BYTES), 0, "%s", io->name);
			free(all);
		}
		close(fd);
	}
	free(oracle);
	free(buf);
	free(got);
}

Test(io, read_across_end_of_file_is_short_and_past_it_is_empty)
{
	static const char text[] = "0123456789";
	char got[64];

	for (int b = 0; b < nr_backends; b++) {
		const struct io_backend *io = backends[b];
		int fd = tmp_file(io->name);

		cr_assert_eq(write(fd, text, 10), 10);
		memset(got, 'x', sizeof(got));
		cr_assert_eq(io->pread(fd, got, sizeof(got), 4), 6, "%s", io->name);
		cr_assert_eq(memcmp(got, "456789", 6), 0);
		cr_assert_eq(got[6], 'x', "%s wrote past the bytes it read", io->name);
		cr_assert_eq(io->pread(fd, got, sizeof(got), 10), 0);
		cr_assert_eq(io->pread(fd, got, sizeof(got), 1000), 0);
		cr_assert_eq(io->pread(fd, got, 0, 0), 0);
		close(fd);
	}
}

Test(io, bad_descriptor_gives_ebadf)
{
	char buf[16] = { 0 };
	int fd = tmp_file("closed");

	close(fd); /* nothing else opens files in this process meanwhile */
	for (int b = 0; b < nr_backends; b++) {
		const struct io_backend *io = backends[b];

		cr_assert_eq(io->pread(fd, buf, sizeof(buf), 0), -EBADF, "%s", io->name);
		cr_assert_eq(io->pwrite(fd, buf, sizeof(buf), 0), -EBADF, "%s", io->name);
		cr_assert_eq(io->fdatasync(fd), -EBADF, "%s", io->name);
		cr_assert_eq(io->pread(-1, buf, sizeof(buf), 0), -EBADF, "%s", io->name);
	}
}

Test(io, write_to_read_only_descriptor_fails_without_partial_success)
{
	char path[128], buf[16] = "abc";
	int fd;

	snprintf(path, sizeof(path), "%s/ro", tmp_dir);
	close(tmp_file("ro"));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	for (int b = 0; b < nr_backends; b++)
		cr_assert_eq(backends[b]->pwrite(fd, buf, 3, 0), -EBADF, "%s", backends[b]->name);
	close(fd);
}

struct thread_arg {
	const struct io_backend *io;
	int fd;
	int id;
	int failures;
};

static void *thread_rw(void *p)
{
	struct thread_arg *a = p;
	unsigned char buf[8192], got[8192];

	/* Each thread owns a disjoint 8 KiB slot; its ring is its own, freed when it exits. */
	for (int i = 0; i < 200; i++) {
		uint64_t off = (uint64_t)a->id * sizeof(buf);

		memset(buf, a->id * 31 + i, sizeof(buf));
		if (a->io->pwrite(a->fd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf) ||
			a->io->pread(a->fd, got, sizeof(got), off) != (ssize_t)sizeof(got) ||
			memcmp(buf, got, sizeof(buf)) != 0)
			a->failures++;
	}
	return NULL;
}

Test(io, threads_each_with_their_own_ring_do_not_mix_results)
{
	enum { NR_THREADS = 8 };

	for (int b = 0; b < nr_backends; b++) {
		pthread_t tids[NR_THREADS];
		struct thread_arg args[NR_THREADS];
		int fd = tmp_file(backends[b]->name);

		for (int t = 0; t < NR_THREADS; t++) {
			args[t] = (struct thread_arg){ backends[b], fd, t, 0 };
			cr_assert_eq(pthread_create(&tids[t], NULL, thread_rw, &args[t]), 0);
		}
		for (int t = 0; t < NR_THREADS; t++) {
			pthread_join(tids[t], NULL);
			cr_assert_eq(args[t].failures, 0, "%s thread %d", backends[b]->name, t);
		}
		close(fd);
	}
}

/* No setup here: io_default() decides once per process (Criterion forks one per test), and
 * the io suite's setup has already asked it. */
Test(io_default, ferry_io_sync_forces_the_synchronous_backend)
{
	setenv("FERRY_IO", "sync", 1);
	cr_assert_eq(io_default(), &io_sync_backend);
}
