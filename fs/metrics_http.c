/* The --metrics-addr server over libmicrohttpd (metrics.h; metrics_none.c is the build without
 * it): one thread of its own runs MHD's epoll loop, answers GET /metrics with metrics_render()
 * and cuts off any connection that has not finished its request within a deadline, so that slow
 * clients cannot hold the few connection slots and starve the scraper. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>

#include "fs/log.h"
#include "fs/metrics.h"

/* Connections served at once: a scraper needs one, a few curls beside it are fine; more than
 * that is not a Prometheus server. A connection past the limit waits in the listen backlog
 * (FIFO) until a slot frees, which the deadline below bounds.
 * No MHD_OPTION_PER_IP_CONNECTION_LIMIT: MHD closes a connection over the per-address limit
 * at once, so local clients (all 127.0.0.1) holding that many slots made a local scrape fail
 * outright, where without it the scrape waits its turn, at most the deadline. */
#define METRICS_MAX_CONNECTIONS 16
/* A connection must send its request and be answered within this long of its start (or of
 * its last answer, when kept alive); idle or not, it is closed past it. MHD's own timeout
 * (METRICS_IDLE_TIMEOUT_S) only closes a connection that sends nothing: a client trickling a
 * header line every second kept its slot for ever, and 16 of them blocked every scrape. A
 * scrape is answered in about a millisecond: 2 s is far above any honest client. */
#define METRICS_REQUEST_DEADLINE_NS 2000000000ll
#define METRICS_IDLE_TIMEOUT_S      2
/* How often the loop looks for connections past the deadline while any is open. */
#define METRICS_SWEEP_MS 100

/* ---- the address ---- */

/* Splits HOST:PORT ([V6]:PORT) into host (at most hostlen - 1 bytes) and port. */
static int split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
	char *err, size_t errlen)
{
	const char *colon, *h = addr, *he;
	char *end;
	long p;

	if (addr[0] == '[') {
		h = addr + 1;
		he = strchr(h, ']');
		if (!he || he[1] != ':') {
			snprintf(err, errlen, "--metrics-addr '%s': expected [IPV6]:PORT", addr);
			return -EINVAL;
		}
		colon = he + 1;
	} else {
		colon = strrchr(addr, ':');
		he = colon;
		if (colon && memchr(addr, ':', (size_t)(colon - addr))) {
			snprintf(err, errlen,
				"--metrics-addr '%s': an IPv6 address goes in brackets, e.g. "
				"[::1]:9100",
				addr);
			return -EINVAL;
		}
	}
	if (!colon || he == h) {
		snprintf(err, errlen,
			"--metrics-addr '%s': expected HOST:PORT, e.g. 127.0.0.1:9100", addr);
		return -EINVAL;
	}
	if ((size_t)(he - h) >= hostlen) {
		snprintf(err, errlen, "--metrics-addr '%s': host name too long", addr);
		return -EINVAL;
	}
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || errno || p < 1 || p > 65535) {
		snprintf(err, errlen, "--metrics-addr '%s': the port must be 1 to 65535", addr);
		return -EINVAL;
	}
	snprintf(port, portlen, "%ld", p);
	return 0;
}

int metrics_check_addr(const char *addr, char *errbuf, size_t errlen)
{
	char host[256], port[8];

	return split_addr(addr, host, sizeof(host), port, sizeof(port), errbuf, errlen);
}

/* A listening socket on addr's first address; only that address (an IPv6 one does not take
 * IPv4 too). SO_REUSEADDR lets a remount bind again while the last mount's connections sit
 * in TIME_WAIT; it does not let two listeners share a port. */
static int listen_on(const char *addr, int *fd_out, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[256], port[8];
	int fd, one = 1, ret;

	ret = split_addr(addr, host, sizeof(host), port, sizeof(port), err, errlen);
	if (ret)
		return ret;
	ret = getaddrinfo(host, port, &hints, &res);
	if (ret) {
		snprintf(err, errlen, "--metrics-addr '%s': cannot resolve '%s': %s", addr, host,
			gai_strerror(ret));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		ret = errno ? -errno : -EIO;
		goto fail;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (res->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64)) {
		ret = errno ? -errno : -EIO;
		goto fail;
	}
	freeaddrinfo(res);
	*fd_out = fd;
	return 0;
fail:
	snprintf(err, errlen, "cannot serve metrics on %s: %s", addr, strerror(-ret));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return ret;
}

/* ---- the server ---- */

/* One open connection; on the server's list from MHD's STARTED notice to its CLOSED one.
 * Touched only by the server's thread (MHD runs every callback there). */
struct metrics_conn {
	struct metrics_conn *prev, *next;
	struct MHD_Connection *conn;
	struct timespec since; /* its start, or the end of its last request */
	bool cut;              /* shut down for the deadline; MHD closes it on its next run */
};

/* The daemon, its thread and its connections. mhd is driven only by thread (MHD_run) once
 * started; wake's write end stops the loop. conns is the thread's alone. */
struct metrics_server {
	struct MHD_Daemon *mhd;
	struct ferryfs *fs;
	pthread_t thread;
	int wake[2];
	struct metrics_conn conns; /* list head */
	unsigned nr_conns;         /* on conns */
};

static int64_t ns_since(const struct timespec *t, const struct timespec *now)
{
	return (int64_t)(now->tv_sec - t->tv_sec) * 1000000000ll + (now->tv_nsec - t->tv_nsec);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("metrics server: %s", line);
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
	enum MHD_ConnectionNotificationCode toe)
{
	struct metrics_server *s = cls;
	struct metrics_conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return; /* not tracked: MHD's idle timeout still closes it */
		c->conn = conn;
		clock_gettime(CLOCK_MONOTONIC, &c->since);
		c->next = s->conns.next;
		c->prev = &s->conns;
		s->conns.next->prev = c;
		s->conns.next = c;
		s->nr_conns++;
		*socket_context = c;
		return;
	}
	c = *socket_context;
	if (!c)
		return;
	c->prev->next = c->next;
	c->next->prev = c->prev;
	s->nr_conns--;
	free(c);
	*socket_context = NULL;
}

/* A request was answered: a kept-alive connection's deadline starts again from here. */
static void notify_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
	enum MHD_RequestTerminationCode toe)
{
	const union MHD_ConnectionInfo *ci;
	struct metrics_conn *c;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	c = ci ? ci->socket_context : NULL;
	if (c)
		clock_gettime(CLOCK_MONOTONIC, &c->since);
}

/* Shuts down the socket of every connection past the deadline. MHD has no call that closes a
 * connection from outside its callbacks; a shut-down socket reads as end of file, which MHD's
 * next run sees and closes the connection as if the client had gone (CLOSED notice). */
static void cut_late_connections(struct metrics_server *s)
{
	const union MHD_ConnectionInfo *ci;
	struct metrics_conn *c;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (c = s->conns.next; c != &s->conns; c = c->next) {
		if (c->cut || ns_since(&c->since, &now) < METRICS_REQUEST_DEADLINE_NS)
			continue;
		ci = MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci)
			continue;
		shutdown(ci->connect_fd, SHUT_RDWR);
		c->cut = true;
		log_debug("metrics server: closed a connection past its %lld ms deadline",
			METRICS_REQUEST_DEADLINE_NS / 1000000);
	}
}

/* The server's thread: waits on MHD's epoll descriptor and the wake pipe, runs MHD, and
 * while any connection is open looks every METRICS_SWEEP_MS for one past its deadline.
 * At the connection limit MHD takes the listening socket out of its epoll set and puts it
 * back only at the start of its next run: after a run that closed connections, run again at
 * once. Waiting on the epoll descriptor instead left the backlog unserved for good when the
 * last connections closed together (16 slow clients cut in one run: the scrape behind them
 * timed out, one test run in four). */
static void *serve(void *arg)
{
	struct metrics_server *s = arg;
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	struct pollfd p[2] = { { .fd = di->epoll_fd, .events = POLLIN },
		{ .fd = s->wake[0], .events = POLLIN } };
	MHD_UNSIGNED_LONG_LONG mhd_ms;
	bool closed_some = false;
	unsigned nr_before;
	int timeout;

	for (;;) {
		timeout = -1;
		if (MHD_get_timeout(s->mhd, &mhd_ms) == MHD_YES)
			timeout = mhd_ms > INT32_MAX ? INT32_MAX : (int)mhd_ms;
		if (s->nr_conns && (timeout < 0 || timeout > METRICS_SWEEP_MS))
			timeout = METRICS_SWEEP_MS;
		if (closed_some)
			timeout = 0;
		if (poll(p, 2, timeout) < 0 && errno != EINTR)
			log_debug("metrics server: poll: %s", strerror(errno));
		if (p[1].revents)
			break;
		nr_before = s->nr_conns;
		MHD_run(s->mhd);
		cut_late_connections(s);
		closed_some = s->nr_conns < nr_before;
	}
	return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
	char *body, size_t len, bool owned)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, body,
		owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		if (owned)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* GET or HEAD /metrics: the exposition text; anything else is refused. Answered on the first
 * call (a GET has no body to wait for). */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
	const char *method, const char *version, const char *upload_data, size_t *upload_data_size,
	void **con_cls)
{
	static char not_found[] = "not found: metrics are at /metrics\n";
	static char not_allowed[] = "method not allowed: GET /metrics\n";
	struct metrics_server *s = cls;
	char *text;
	size_t len;

	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", not_allowed,
			sizeof(not_allowed) - 1, false);
	if (strcmp(url, "/metrics"))
		return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
			sizeof(not_found) - 1, false);
	if (metrics_render(s->fs, &text, &len))
		return MHD_NO; /* out of memory: the connection is closed */
	return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
		true);
}

int metrics_server_new(struct metrics_server **out, const char *addr, struct ferryfs *fs,
	char *errbuf, size_t errlen)
{
	struct metrics_server *s;
	int fd = -1, ret;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	s->fs = fs;
	s->conns.next = s->conns.prev = &s->conns;
	s->wake[0] = s->wake[1] = -1;
	ret = listen_on(addr, &fd, errbuf, errlen);
	if (ret)
		goto err;
	if (pipe2(s->wake, O_CLOEXEC)) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot serve metrics on %s: %s", addr, strerror(errno));
		goto err;
	}
	/* No thread of MHD's: serve() drives it, so that it can enforce the deadline between
	 * runs. MHD owns fd from here on, and closes it when stopped. */
	s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_TIMEOUT_S,
		MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s, MHD_OPTION_NOTIFY_COMPLETED,
		notify_completed, s, MHD_OPTION_END);
	if (!s->mhd) {
		ret = -EIO;
		snprintf(errbuf, errlen,
			"cannot serve metrics on %s: the HTTP server did not start", addr);
		goto err;
	}
	fd = -1;
	ret = -pthread_create(&s->thread, NULL, serve, s);
	if (ret) {
		snprintf(errbuf, errlen, "cannot serve metrics on %s: %s", addr, strerror(-ret));
		goto err;
	}
	log_info("serving metrics at http://%s/metrics", addr);
	*out = s;
	return 0;
err:
	if (s->mhd)
		MHD_stop_daemon(s->mhd);
	if (fd >= 0)
		close(fd);
	if (s->wake[0] >= 0) {
		close(s->wake[0]);
		close(s->wake[1]);
	}
	free(s);
	return ret;
}

void metrics_server_free(struct metrics_server *s)
{
	if (!s)
		return;
	if (write(s->wake[1], "x", 1) < 0)
		log_debug("metrics server: cannot wake its thread: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	MHD_stop_daemon(s->mhd); /* closes every connection: CLOSED notices free the list */
	close(s->wake[0]);
	close(s->wake[1]);
	free(s);
}
