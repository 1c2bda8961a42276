/* Tests of the synchronous HTTP client of the remote backends (fs/remote/net_client.c), against
 * a one-connection HTTP server on loopback run by the test itself. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs/remote/net_client.h"
#include "fs/remote/remote.h"

/* Answers one connection with reply, after reading the request's head into request. */
struct server {
	int fd, port;
	const char *reply;
	char request[4096];
	pthread_t thread;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	size_t n = 0, off = 0, len = strlen(s->reply);
	int c = accept(s->fd, NULL, NULL);

	if (c < 0)
		return NULL;
	while (n < sizeof(s->request) - 1 && !strstr(s->request, "\r\n\r\n")) {
		ssize_t r = read(c, s->request + n, sizeof(s->request) - 1 - n);

		if (r <= 0)
			break;
		n += (size_t)r;
		s->request[n] = '\0';
	}
	while (off < len) {
		ssize_t w = write(c, s->reply + off, len - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(c);
	return NULL;
}

/* A listening socket on a free loopback port; s->port says which. */
static void listen_loopback(struct server *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);

	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s->fd, 0);
	cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s->fd, 4), 0);
	cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
}

static void server_start(struct server *s, const char *reply)
{
	memset(s, 0, sizeof(*s));
	s->reply = reply;
	listen_loopback(s);
	cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
	pthread_join(s->thread, NULL);
	close(s->fd);
}

/* Sends req to the server's root and stops the server; returns what net_client_request said. */
static enum net_error request(struct server *s, struct net_request *req, struct net_reply *rep)
{
	struct net_client *c;
	char url[64];
	enum net_error ne;

	cr_assert_eq(net_global_init(), 0);
	c = net_client_new(&(struct remote_options){ 0 });
	cr_assert_not_null(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s->port);
	req->url = url;
	ne = net_client_request(c, req, rep);
	net_client_free(c);
	return ne;
}

Test(net_client, captures_body_and_the_headers_the_backends_read)
{
	struct curl_slist *hdrs = curl_slist_append(NULL, "X-Asked: yes");
	struct net_request req = { .headers = hdrs, .max_body_bytes = 5 };
	struct net_reply rep;
	struct server s;

	server_start(&s, "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\n"
			 "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\n"
			 "Retry-After: 3\r\nConnection: close\r\n\r\nhello");
	cr_assert_eq(request(&s, &req, &rep), NET_OK, "%s", rep.curl_err);
	server_stop(&s);
	cr_expect(strstr(s.request, "GET /x HTTP/1.1\r\n") == s.request, "%s", s.request);
	cr_expect(strstr(s.request, "\r\nX-Asked: yes\r\n") != NULL, "%s", s.request);
	cr_expect_eq(rep.status, 200);
	cr_expect_str_eq(rep.body, "hello");
	cr_expect_eq(rep.body_bytes, 5);
	cr_expect_str_eq(rep.etag, "\"v1\"");
	cr_expect_eq(rep.last_modified, 784111777);
	cr_expect(rep.has_length);
	cr_expect_eq(rep.content_length, 5);
	cr_expect_eq(rep.retry_after_ms, 3000);
	cr_expect_null(rep.location);
	net_reply_done(&rep);
	curl_slist_free_all(hdrs);
}

Test(net_client, head_asks_for_no_body_and_keeps_the_length)
{
	struct net_request req = { .head = true };
	struct net_reply rep;
	struct server s;

	server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 123456\r\nConnection: close\r\n\r\n");
	cr_assert_eq(request(&s, &req, &rep), NET_OK, "%s", rep.curl_err);
	server_stop(&s);
	cr_expect(strstr(s.request, "HEAD /x HTTP/1.1\r\n") == s.request, "%s", s.request);
	cr_expect(rep.has_length);
	cr_expect_eq(rep.content_length, 123456);
	cr_expect_null(rep.body);
	cr_expect_null(rep.etag);
	cr_expect_eq(rep.retry_after_ms, -1);
	net_reply_done(&rep);
}

Test(net_client, drops_an_etag_that_names_no_version_and_keeps_a_redirect)
{
	struct net_request req = { .head = true };
	struct net_reply rep;
	struct server s;

	server_start(&s, "HTTP/1.1 301 Moved Permanently\r\nETag: W/\"weak\"\r\n"
			 "Location: http://127.0.0.1/x/\r\nContent-Length: 0\r\n"
			 "Connection: close\r\n\r\n");
	/* redirects are not followed: a 301 answers another question */
	cr_assert_eq(request(&s, &req, &rep), NET_BAD_RESPONSE);
	server_stop(&s);
	cr_expect_eq(rep.status, 301);
	cr_expect_null(rep.etag);
	cr_expect_str_eq(rep.location, "http://127.0.0.1/x/");
	net_reply_done(&rep);
}

Test(net_client, refuses_a_body_over_the_cap_in_one_line)
{
	struct net_request req = { .max_body_bytes = 10 };
	struct net_reply rep;
	struct server s;
	char err[256];

	server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
			 "hello world");
	cr_assert_neq(request(&s, &req, &rep), NET_OK);
	server_stop(&s);
	cr_expect_eq(rep.code, CURLE_FILESIZE_EXCEEDED);
	net_reply_describe_transport(&rep, "127.0.0.1:1", err, sizeof(err));
	cr_expect_str_eq(err, "127.0.0.1:1: a reply over 10 bytes");
	net_reply_done(&rep);
}

Test(net_client, says_cannot_connect_when_nobody_listens)
{
	struct net_request req = { .max_body_bytes = 10 };
	struct net_reply rep;
	struct server s;
	char err[256], want[256], where[64];

	/* a port that was free a moment ago, closed before anyone listens on it */
	listen_loopback(&s);
	close(s.fd);
	cr_assert_eq(request(&s, &req, &rep), NET_CONNECT);
	snprintf(where, sizeof(where), "127.0.0.1:%d", s.port);
	net_reply_describe_transport(&rep, where, err, sizeof(err));
	snprintf(want, sizeof(want), "cannot connect to %s: %s", where, strerror(ECONNREFUSED));
	cr_expect_str_eq(err, want);
	net_reply_done(&rep);
}
