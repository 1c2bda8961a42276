/* Unit tests for train/rendezvous.c: ranks as real processes (fork) meeting over loopback TCP,
 * a 128-byte id (the size of an NCCL id) handed from rank 0 to the others, and the one-line
 * errors of a rendezvous that cannot complete: a rank that never arrives, rank 0 never there, a
 * rank given twice, a world size that differs, a port already taken. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "train/rendezvous.h"

enum { ID_BYTES = 128 };

/* A port nobody listens on now: the kernel's choice for a socket of our own, closed again. */
static int free_port(void)
{
	int s = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = in6addr_any };
	socklen_t len = sizeof(a);
	cr_assert_geq(s, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	close(s);
	return ntohs(a.sin6_port);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What a rank in another process ended with: rc, its error line and the bytes it got. */
struct outcome {
	int rc;
	char err[256];
	unsigned char id[ID_BYTES];
};

struct rank_proc {
	pid_t pid;
	int fd; /* read end: the child's struct outcome */
};

/* Starts rank `rank` of `world` in a child after delay_ms; for rank 0, id is what it hands out. */
static struct rank_proc start_rank(int port, int rank, int world, const unsigned char *id,
	int timeout_ms, int delay_ms)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct outcome o = { 0 };
		close(p[0]);
		if (delay_ms)
			usleep((useconds_t)delay_ms * 1000);
		if (rank == 0)
			memcpy(o.id, id, ID_BYTES);
		o.rc = rendezvous_bcast("127.0.0.1", port, rank, world, o.id, ID_BYTES, timeout_ms,
			o.err, sizeof(o.err));
		_exit(write(p[1], &o, sizeof(o)) == sizeof(o) ? 0 : 1);
	}
	close(p[1]);
	return (struct rank_proc){ pid, p[0] };
}

static struct outcome finish_rank(struct rank_proc r)
{
	struct outcome o;
	int status;
	cr_assert_eq(read(r.fd, &o, sizeof(o)), (ssize_t)sizeof(o), "the rank died");
	close(r.fd);
	cr_assert_eq(waitpid(r.pid, &status, 0), r.pid);
	return o;
}

static void random_id(unsigned char *id)
{
	srand((unsigned)getpid());
	for (int i = 0; i < ID_BYTES; i++)
		id[i] = (unsigned char)rand();
}

Test(rendezvous, two_ranks_exchange_a_128_byte_id)
{
	unsigned char id[ID_BYTES], got[ID_BYTES] = { 0 };
	char err[256] = "";
	int port = free_port();
	random_id(id);
	/* rank 1 comes first and must keep trying until rank 0 listens */
	struct rank_proc r1 = start_rank(port, 1, 2, NULL, 10000, 0);
	usleep(300 * 1000);
	memcpy(got, id, ID_BYTES);
	cr_assert_eq(rendezvous_bcast(NULL, port, 0, 2, got, ID_BYTES, 10000, err, sizeof(err)), 0,
		"rank 0: %s", err);
	struct outcome o = finish_rank(r1);
	cr_assert_eq(o.rc, 0, "rank 1: %s", o.err);
	cr_expect_eq(memcmp(o.id, id, ID_BYTES), 0, "rank 1 got other bytes");
	cr_expect_eq(memcmp(got, id, ID_BYTES), 0, "rank 0's own bytes changed");
}

Test(rendezvous, four_ranks_arriving_in_any_order_get_the_same_id)
{
	unsigned char id[ID_BYTES];
	int port = free_port();
	random_id(id);
	struct rank_proc r[4] = {
		start_rank(port, 3, 4, NULL, 10000, 0),
		start_rank(port, 1, 4, NULL, 10000, 200),
		start_rank(port, 0, 4, id, 10000, 100),
		start_rank(port, 2, 4, NULL, 10000, 400),
	};
	for (int i = 0; i < 4; i++) {
		struct outcome o = finish_rank(r[i]);
		cr_assert_eq(o.rc, 0, "%s", o.err);
		cr_expect_eq(memcmp(o.id, id, ID_BYTES), 0, "a rank got other bytes");
	}
}

Test(rendezvous, a_rank_that_never_arrives_is_named_within_the_timeout)
{
	unsigned char id[ID_BYTES];
	char err[256] = "";
	int port = free_port();
	random_id(id);
	/* ranks 1 and 3 of 4 come; 2 never does */
	struct rank_proc r1 = start_rank(port, 1, 4, NULL, 1500, 0);
	struct rank_proc r3 = start_rank(port, 3, 4, NULL, 1500, 0);
	double t0 = now_s();
	int rc = rendezvous_bcast(NULL, port, 0, 4, id, ID_BYTES, 1500, err, sizeof(err));
	double took = now_s() - t0;
	cr_assert_eq(rc, -ETIMEDOUT, "rc %d: %s", rc, err);
	char want[128];
	snprintf(want, sizeof(want), "rendezvous: rank 2 never arrived within 1.5 s (port %d)",
		port);
	cr_expect_str_eq(err, want);
	cr_expect(took > 1.4 && took < 3.0, "gave up after %.2f s of 1.5", took);
	/* the ranks that came hear why, at once, not at their own timeout */
	struct outcome o1 = finish_rank(r1), o3 = finish_rank(r3);
	cr_expect_lt(o1.rc, 0);
	cr_expect(strstr(o1.err, "rank 0 gave up: rank 2 never arrived"), "rank 1: %s", o1.err);
	cr_expect(strstr(o3.err, "rank 0 gave up: rank 2 never arrived"), "rank 3: %s", o3.err);
}

Test(rendezvous, several_missing_ranks_are_all_named)
{
	unsigned char id[ID_BYTES];
	char err[256] = "";
	int port = free_port();
	random_id(id);
	cr_assert_lt(rendezvous_bcast(NULL, port, 0, 4, id, ID_BYTES, 500, err, sizeof(err)), 0);
	cr_expect(strstr(err, "ranks 1, 2, 3 never arrived"), "%s", err);
}

Test(rendezvous, rank_0_that_never_arrives_is_said_by_the_others)
{
	unsigned char id[ID_BYTES];
	char err[256] = "", want[160];
	int port = free_port();
	double t0 = now_s();
	int rc = rendezvous_bcast("127.0.0.1", port, 1, 2, id, ID_BYTES, 1000, err, sizeof(err));
	double took = now_s() - t0;
	cr_assert_eq(rc, -ETIMEDOUT, "rc %d: %s", rc, err);
	snprintf(want, sizeof(want),
		"rendezvous: rank 1 never reached rank 0 at 127.0.0.1:%d within 1 s", port);
	cr_expect(strncmp(err, want, strlen(want)) == 0, "%s", err);
	cr_expect(took > 0.9 && took < 2.0, "gave up after %.2f s of 1", took);
}

Test(rendezvous, one_rank_given_twice_ends_it_with_a_line_naming_it)
{
	unsigned char id[ID_BYTES];
	char err[256] = "";
	int port = free_port();
	random_id(id);
	struct rank_proc a = start_rank(port, 1, 3, NULL, 5000, 0);
	struct rank_proc b = start_rank(port, 1, 3, NULL, 5000, 0);
	double t0 = now_s();
	cr_assert_lt(rendezvous_bcast(NULL, port, 0, 3, id, ID_BYTES, 5000, err, sizeof(err)), 0);
	cr_expect_lt(now_s() - t0, 2.0, "waited for the timeout");
	cr_expect(strstr(err, "rank 1 arrived twice"), "%s", err);
	struct outcome oa = finish_rank(a), ob = finish_rank(b);
	cr_expect(oa.rc < 0 && ob.rc < 0);
	cr_expect(strstr(oa.err, "arrived twice") && strstr(ob.err, "arrived twice"), "%s / %s",
		oa.err, ob.err);
}

Test(rendezvous, a_rank_with_another_world_size_ends_it)
{
	unsigned char id[ID_BYTES];
	char err[256] = "";
	int port = free_port();
	random_id(id);
	struct rank_proc r = start_rank(port, 1, 3, NULL, 5000, 0);
	cr_assert_lt(rendezvous_bcast(NULL, port, 0, 2, id, ID_BYTES, 5000, err, sizeof(err)), 0);
	cr_expect(strstr(err, "world size 3"), "%s", err);
	struct outcome o = finish_rank(r);
	cr_expect(strstr(o.err, "rank 0 gave up"), "%s", o.err);
}

/* a port scanner, or a client of another service on the port, is no rank */
Test(rendezvous, a_stray_connection_is_not_a_rank)
{
	unsigned char id[ID_BYTES], got[ID_BYTES];
	int port = free_port();
	random_id(id);
	struct rank_proc r0 = start_rank(port, 0, 2, id, 5000, 0);
	usleep(200 * 1000);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(write(s, "GET / HTTP/1.0\r\n\r\n", 18), 18);
	char err[256] = "";
	cr_assert_eq(rendezvous_bcast("127.0.0.1", port, 1, 2, got, ID_BYTES, 5000, err,
			     sizeof(err)),
		0, "%s", err);
	cr_expect_eq(memcmp(got, id, ID_BYTES), 0);
	close(s);
	struct outcome o = finish_rank(r0);
	cr_expect_eq(o.rc, 0, "%s", o.err);
}

Test(rendezvous, a_port_in_use_is_named)
{
	unsigned char id[ID_BYTES] = { 0 };
	char err[256] = "", want[64];
	int s = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = in6addr_any };
	socklen_t len = sizeof(a);
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s, 1), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	int port = ntohs(a.sin6_port);
	cr_assert_lt(rendezvous_bcast(NULL, port, 0, 2, id, ID_BYTES, 1000, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "cannot listen on port %d", port);
	cr_expect(strstr(err, want) && strstr(err, "FERRY_RENDEZVOUS_PORT"), "%s", err);
	close(s);
}
