/* train/: the TCP rendezvous of rendezvous.h. One message each way: a rank's hello (magic,
 * world, rank, bytes wanted) and rank 0's answer (status, then the bytes, or a line of text
 * saying why it gave up). Rank 0 waits on poll() for all of them at once, so a rank that
 * connects and says nothing holds up no one, and the deadline is the same for every step. */
#include "config.h"

#include "train/rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HELLO_MAGIC 0x66727276u /* "frrv" */
enum { ANSWER_OK = 0, ANSWER_GAVE_UP = 1 };

/* in network order on the wire */
struct hello {
	uint32_t magic, world, rank, n;
};

struct answer {
	uint32_t status, n; /* n: bytes that follow, the payload or the reason */
};

static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t left = deadline - now_ms();
	return left < 0 ? 0 : (int)left;
}

/* Reads n bytes from a non-blocking fd by the deadline: 0, -ETIMEDOUT, -EPIPE (closed) or
 * -errno. */
static int read_by(int fd, void *buf, size_t n, int64_t deadline)
{
	char *p = buf;
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int left = left_ms(deadline);
		if (left == 0 || poll(&pfd, 1, left) == 0)
			return -ETIMEDOUT;
	}
	return 0;
}

static int write_by(int fd, const void *buf, size_t n, int64_t deadline)
{
	const char *p = buf;
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return -errno;
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int left = left_ms(deadline);
		if (left == 0 || poll(&pfd, 1, left) == 0)
			return -ETIMEDOUT;
	}
	return 0;
}

static void set_nonblocking(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void answer(int fd, uint32_t status, const void *buf, size_t n, int64_t deadline)
{
	struct answer a = { htonl(status), htonl((uint32_t)n) };
	/* a peer that does not take a small answer in time learns nothing: it times out itself */
	if (write_by(fd, &a, sizeof(a), deadline) == 0)
		write_by(fd, buf, n, deadline);
}

/* "rank 2" or "ranks 2, 3, 5" (the first 16, then "and N more") of the ranks not in arrived[] */
static void name_missing(const int *fds, int world, char *out, size_t len)
{
	int missing = 0, named = 0;
	size_t at = 0;
	for (int r = 1; r < world; r++)
		missing += fds[r] < 0;
	at += (size_t)snprintf(out, len, missing == 1 ? "rank" : "ranks");
	for (int r = 1; r < world && at < len; r++) {
		if (fds[r] >= 0)
			continue;
		if (named == 16) {
			snprintf(out + at, len - at, " and %d more", missing - named);
			return;
		}
		at += (size_t)snprintf(out + at, len - at, "%s %d", named ? "," : "", r);
		named++;
	}
}

static int listen_on(int port, char *err, size_t errlen)
{
	int one = 1, zero = 0;
	/* both families on one socket where the kernel has IPv6, else IPv4 alone */
	int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
			.sin6_port = htons((uint16_t)port),
			.sin6_addr = in6addr_any };
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		if (bind(s, (struct sockaddr *)&a6, sizeof(a6)) == 0)
			goto bound;
		close(s);
	}
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return say(err, errlen, -errno, "rendezvous: socket: %s", strerror(errno));
	struct sockaddr_in a4 = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_ANY) };
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a4, sizeof(a4)) < 0) {
		int e = errno;
		close(s);
		return say(err, errlen, -e,
			"rendezvous: rank 0 cannot listen on port %d: %s (another program holds it? "
			"set FERRY_RENDEZVOUS_PORT)",
			port, strerror(e));
	}
bound:
	if (listen(s, 128) < 0) {
		int e = errno;
		close(s);
		return say(err, errlen, -e, "rendezvous: listen on port %d: %s", port, strerror(e));
	}
	set_nonblocking(s);
	return s;
}

/* Rank 0: accepts until world - 1 ranks have said hello, then answers each with buf. */
static int serve(int port, int world, const void *buf, size_t n, int timeout_ms, char *err,
	size_t errlen)
{
	int64_t deadline = now_ms() + timeout_ms;
	/* fds[r]: rank r's connection once its hello is in; pending: accepted, hello not yet in */
	int *fds = malloc((size_t)world * sizeof(*fds));
	struct pollfd *pfds = malloc(((size_t)world + 1) * sizeof(*pfds));
	struct pending {
		int fd;
		size_t got;
		struct hello h;
	} *pend = calloc((size_t)world, sizeof(*pend));
	int nr_pend = 0, arrived = 1, rc = 0, ls = -1;
	char reason[256] = "";

	if (!fds || !pfds || !pend) {
		rc = say(err, errlen, -ENOMEM, "rendezvous: out of memory");
		goto out;
	}
	for (int r = 0; r < world; r++)
		fds[r] = -1;
	fds[0] = 0; /* rank 0 is here */
	ls = listen_on(port, err, errlen);
	if (ls < 0) {
		rc = ls;
		goto out;
	}
	while (arrived < world) {
		int left = left_ms(deadline), nfds = 0;
		if (left == 0) {
			char names[200];
			name_missing(fds, world, names, sizeof(names));
			snprintf(reason, sizeof(reason), "%s never arrived within %g s (port %d)",
				names, timeout_ms / 1000.0, port);
			rc = -ETIMEDOUT;
			break;
		}
		/* a pending slot frees only when a hello is complete: at most world - 1 wait */
		pfds[nfds++] =
			(struct pollfd){ .fd = nr_pend < world - 1 ? ls : -1, .events = POLLIN };
		for (int i = 0; i < nr_pend; i++)
			pfds[nfds++] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		if (poll(pfds, (nfds_t)nfds, left) < 0 && errno != EINTR) {
			rc = say(err, errlen, -errno, "rendezvous: poll: %s", strerror(errno));
			goto out;
		}
		if (pfds[0].revents & POLLIN) {
			int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (c >= 0)
				pend[nr_pend++] = (struct pending){ .fd = c };
		}
		for (int i = nr_pend - 1; i >= 0; i--) {
			struct pending *p = &pend[i];
			if (i + 1 >= nfds || !(pfds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = read(p->fd, (char *)&p->h + p->got, sizeof(p->h) - p->got);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r > 0)
				p->got += (size_t)r;
			if (r > 0 && p->got < sizeof(p->h))
				continue;
			int fd = p->fd;
			struct hello h = p->h;
			bool whole = r > 0 && ntohl(h.magic) == HELLO_MAGIC;
			*p = pend[--nr_pend];
			if (!whole) {
				/* closed early, or not one of ours: a stray connection is no rank */
				close(fd);
				continue;
			}
			int from = (int)ntohl(h.rank), w = (int)ntohl(h.world);
			uint32_t want = ntohl(h.n);
			if (w != world || from < 1 || from >= world || want != n) {
				snprintf(reason, sizeof(reason),
					"a rank arrived with rank %d, world size %d and a %u-byte id; "
					"rank 0 has world size %d and a %zu-byte id",
					from, w, want, world, n);
				answer(fd, ANSWER_GAVE_UP, reason, strlen(reason), deadline);
				close(fd);
				rc = -EINVAL;
				break;
			}
			if (fds[from] >= 0) {
				snprintf(reason, sizeof(reason),
					"rank %d arrived twice (two processes were given that rank)",
					from);
				answer(fd, ANSWER_GAVE_UP, reason, strlen(reason), deadline);
				close(fd);
				rc = -EINVAL;
				break;
			}
			fds[from] = fd;
			arrived++;
		}
		if (rc < 0)
			break;
	}
	if (rc == 0) {
		for (int r = 1; r < world; r++)
			answer(fds[r], ANSWER_OK, buf, n, deadline + 5000);
	} else {
		say(err, errlen, rc, "rendezvous: %s", reason);
		for (int r = 1; r < world; r++)
			if (fds[r] >= 0)
				answer(fds[r], ANSWER_GAVE_UP, reason, strlen(reason),
					now_ms() + 1000);
	}
out:
	if (fds)
		for (int r = 1; r < world; r++)
			if (fds[r] >= 0)
				close(fds[r]);
	if (pend)
		for (int i = 0; i < nr_pend; i++)
			close(pend[i].fd);
	if (ls >= 0)
		close(ls);
	free(fds);
	free(pfds);
	free(pend);
	return rc;
}

/* One connection attempt to addr:port by the deadline: the socket, or -errno. */
static int connect_once(const struct addrinfo *ai, int64_t deadline)
{
	int e = -ECONNREFUSED;
	for (; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s < 0) {
			e = -errno;
			continue;
		}
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0)
			return s;
		if (errno == EINPROGRESS) {
			struct pollfd pfd = { .fd = s, .events = POLLOUT };
			int so = 0;
			socklen_t len = sizeof(so);
			if (poll(&pfd, 1, left_ms(deadline)) == 1 &&
				getsockopt(s, SOL_SOCKET, SO_ERROR, &so, &len) == 0 && so == 0)
				return s;
			e = so ? -so : -ETIMEDOUT;
		} else {
			e = -errno;
		}
		close(s);
	}
	return e;
}

/* Ranks 1..world-1: connect (again and again while rank 0 is not listening: there is nothing to
 * wait on but the port itself), say hello, read the answer. */
static int join(const char *addr, int port, int rank, int world, void *buf, size_t n,
	int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	char service[16];
	struct hello h = { htonl(HELLO_MAGIC), htonl((uint32_t)world), htonl((uint32_t)rank),
		htonl((uint32_t)n) };
	struct answer a;
	int s = -1, rc;

	snprintf(service, sizeof(service), "%d", port);
	if ((rc = getaddrinfo(addr, service, &hints, &ai)) != 0)
		return say(err, errlen, -EINVAL, "rendezvous: rank %d cannot resolve %s: %s", rank,
			addr, gai_strerror(rc));
	for (;;) {
		s = connect_once(ai, deadline);
		if (s >= 0 || left_ms(deadline) == 0)
			break;
		/* 100 ms between tries, never past the deadline */
		struct timespec ts = { 0, 100 * 1000000L };
		if (left_ms(deadline) < 100)
			ts.tv_nsec = (long)left_ms(deadline) * 1000000L;
		nanosleep(&ts, NULL);
	}
	freeaddrinfo(ai);
	if (s < 0)
		return say(err, errlen, -ETIMEDOUT,
			"rendezvous: rank %d never reached rank 0 at %s:%d within %g s (%s)", rank,
			addr, port, timeout_ms / 1000.0, strerror(-s));
	/* Rank 0 listened by the time we connected, so it gives up by timeout_ms from now at the
	 * latest, and says why: we wait that long and a little more, to hear it. */
	deadline = now_ms() + timeout_ms + 2000;
	rc = write_by(s, &h, sizeof(h), deadline);
	if (rc == 0)
		rc = read_by(s, &a, sizeof(a), deadline);
	if (rc < 0) {
		close(s);
		if (rc == -ETIMEDOUT)
			return say(err, errlen, rc,
				"rendezvous: rank %d reached rank 0 at %s:%d, which did not answer "
				"within %g s",
				rank, addr, port, timeout_ms / 1000.0 + 2);
		return say(err, errlen, rc,
			"rendezvous: rank %d: rank 0 at %s:%d closed the connection without an answer "
			"(%s)",
			rank, addr, port, strerror(-rc));
	}
	a.status = ntohl(a.status);
	a.n = ntohl(a.n);
	if (a.status != ANSWER_OK) {
		char why[256] = "";
		size_t len = a.n < sizeof(why) - 1 ? a.n : sizeof(why) - 1;
		read_by(s, why, len, now_ms() + 1000);
		close(s);
		return say(err, errlen, -EIO, "rendezvous: rank 0 gave up: %s", why);
	}
	rc = a.n == n ? read_by(s, buf, n, deadline + 5000) : -EPROTO;
	close(s);
	if (rc < 0)
		return say(err, errlen, rc, "rendezvous: rank %d: a broken answer from rank 0 (%s)",
			rank, strerror(-rc));
	return 0;
}

int rendezvous_bcast(const char *addr, int port, int rank, int world, void *buf, size_t n,
	int timeout_ms, char *err, size_t errlen)
{
	if (world < 1 || rank < 0 || rank >= world || n > RENDEZVOUS_MAX_BYTES || port < 1 ||
		port > 65535 || timeout_ms < 1)
		return say(err, errlen, -EINVAL,
			"rendezvous: bad arguments (rank %d of %d, %zu bytes, port %d)", rank,
			world, n, port);
	if (world == 1)
		return 0;
	if (rank == 0)
		return serve(port, world, buf, n, timeout_ms, err, errlen);
	if (!addr || !*addr)
		return say(err, errlen, -EINVAL,
			"rendezvous: rank %d does not know where rank 0 is: set MASTER_ADDR", rank);
	return join(addr, port, rank, world, buf, n, timeout_ms, err, errlen);
}
