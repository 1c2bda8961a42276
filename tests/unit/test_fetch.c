/* Tests of the HTTP backend and the fetch engine against real servers on loopback: nginx
 * (tests/lib/nginx.sh, HTTP and HTTPS with a test CA) and the fault-injecting server
 * (tests/lib/faultserver.py). The oracle is always the source file's own bytes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs/cache.h"
#include "fs/fetch.h"
#include "fs/io.h"
#include "fs/manifest.h"
#include "fs/remote/remote.h"

#define DATA_BYTES (3 * 1024 * 1024 + 777)
#define CHUNK      65536

static char tmp[256], docroot[512], state[512], src_root[4096];
static unsigned char *data; /* the bytes of docroot/data.bin */
static pid_t fault_pid;

static void sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static void write_bytes(const char *rel, const void *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", docroot, rel);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static void setup(void)
{
	char *slash;

	snprintf(src_root, sizeof(src_root), "%s", __FILE__);
	slash = strrchr(src_root, '/');
	*slash = '\0';
	strcat(src_root, "/../..");
	snprintf(tmp, sizeof(tmp), "/tmp/ferry-fetch-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(docroot, sizeof(docroot), "%s/root", tmp);
	snprintf(state, sizeof(state), "%s/nginx", tmp);
	sh("mkdir -p '%s/sub dir' '%s/cache'", docroot, tmp);
	data = malloc(DATA_BYTES);
	srand(1234);
	for (size_t i = 0; i < DATA_BYTES; i++)
		data[i] = (unsigned char)(rand() >> 7);
	write_bytes("data.bin", data, DATA_BYTES);
	write_bytes("sub dir/\xc3\xbc 100%.bin", data, 1000);
	write_bytes("empty", "", 0);
}

static void teardown(void)
{
	char cmd[8192];

	if (fault_pid > 0) {
		kill(fault_pid, SIGTERM);
		waitpid(fault_pid, NULL, 0);
		fault_pid = 0;
	}
	snprintf(cmd, sizeof(cmd), "'%s/tests/lib/nginx.sh' stop '%s' >/dev/null 2>&1; rm -rf '%s'",
		src_root, state, tmp);
	if (system(cmd))
		fprintf(stderr, "cleanup failed: %s\n", cmd);
	free(data);
}

TestSuite(fetch, .init = setup, .fini = teardown, .timeout = 100);

static int start_nginx(bool tls)
{
	char cmd[8192];
	int port = 0;
	FILE *p;

	/* NGINX_OWNER: nginx stops when this test process ends, even killed by its timeout. */
	snprintf(cmd, sizeof(cmd), "NGINX_OWNER=%d '%s/tests/lib/nginx.sh' start '%s' '%s' %s",
		(int)getpid(), src_root, state, docroot, tls ? "--tls" : "");
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_eq(fscanf(p, "%d", &port), 1, "nginx did not start");
	cr_assert_eq(pclose(p), 0);
	return port;
}

/* The fault server on docroot, faulting every Nth file GET with mode; extra: one more
 * option (e.g. "--ignore-if-match") or NULL. */
static int start_faultserver_with(const char *mode, int every, const char *extra)
{
	char script[4200], ev[16];
	int fds[2], port = 0;
	FILE *f;

	snprintf(script, sizeof(script), "%s/tests/lib/faultserver.py", src_root);
	snprintf(ev, sizeof(ev), "%d", every);
	cr_assert_eq(pipe(fds), 0);
	fault_pid = fork();
	cr_assert_geq(fault_pid, 0);
	if (fault_pid == 0) {
		/* Ends with this test's process, even one killed by its timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fds[1], 1);
		close(fds[0]);
		execl("/usr/bin/python3", "python3", script, docroot, "--mode", mode, "--every", ev,
			extra, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	cr_assert_eq(fscanf(f, "%d", &port), 1, "faultserver did not start");
	fclose(f);
	return port;
}

static int start_faultserver(const char *mode, int every)
{
	return start_faultserver_with(mode, every, NULL);
}

/* Lines of nginx's access log that contain needle. */
static int count_log(const char *needle)
{
	char path[1024], line[4096];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/access.log", state);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

/* nginx writes a request's access.log line after it has sent the response, so a client
 * can look before the line is there (seen under load). Waits up to 5 s until at least want
 * lines match, then 50 ms more so that a line beyond want can show up too, and counts. */
static int count_log_settled(const char *needle, int want)
{
	for (int i = 0; i < 500 && count_log(needle) < want; i++)
		usleep(10000);
	usleep(50000);
	return count_log(needle);
}

struct env {
	struct remote *r;
	struct cache *c;
	struct fetcher *f;
	struct cache_object *co;
	struct remote_entry e;
	struct remote_object obj;
};

/* Opens v->obj in the cache as the daemon does (the version is the ETag, else the mtime), after
 * a test changed what it claims: the fetcher reads by the identity the cache object keeps. */
static void env_reopen(struct env *v)
{
	char version[64];

	cache_object_unref(v->co);
	v->co = NULL;
	if (!v->obj.etag)
		snprintf(version, sizeof(version), "%lld.%09ld", (long long)v->obj.mtime.tv_sec,
			v->obj.mtime.tv_nsec);
	cr_assert_eq(cache_object_open(v->c, &v->obj, v->obj.etag ? v->obj.etag : version, &v->co),
		0);
}

static int open_remote(struct remote **r, const char *url, const char *ca, char *err, size_t el)
{
	struct remote_options opt = { .ca_file = ca,
		.connect_timeout_ms = 2000,
		.low_speed_time_s = 5 };

	return remote_http_ops.open(r, url, &opt, err, el);
}

static const struct io_backend *env_io; /* the cache's disk I/O; NULL: the default */

static void env_open(struct env *v, const char *url, const char *ca, const char *path,
	const struct fetch_config *fc)
{
	struct cache_config cc = { .chunk_bytes = CHUNK, .io = env_io };
	char err[512] = "", cdir[600];

	memset(v, 0, sizeof(*v));
	cr_assert_eq(open_remote(&v->r, url, ca, err, sizeof(err)), 0, "open %s: %s", url, err);
	snprintf(cdir, sizeof(cdir), "%s/cache", tmp);
	cc.dir = cdir;
	cr_assert_eq(cache_open(&v->c, &cc, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fetcher_new(&v->f, v->r, v->c, fc), 0);
	cr_assert_eq(v->r->ops->stat(v->r, path, &v->e), 0, "stat %s", path);
	v->obj.path = path;
	v->obj.size = v->e.size;
	v->obj.etag = v->e.etag;
	v->obj.mtime = v->e.mtime;
	env_reopen(v);
}

static void env_close(struct env *v)
{
	cache_object_unref(v->co);
	fetcher_free(v->f);
	cache_free(v->c);
	remote_entry_done(&v->e);
	v->r->ops->free(v->r);
}

static void check_random_reads(struct env *v, int nr, unsigned seed)
{
	unsigned char *buf = malloc(5 * CHUNK);

	for (int i = 0; i < nr; i++) {
		uint64_t off = (uint64_t)rand_r(&seed) % (DATA_BYTES + 100);
		size_t len = (size_t)rand_r(&seed) % (i % 10 == 0 ? 5 * CHUNK : 3000) + 1;
		size_t want = off >= DATA_BYTES        ? 0
			      : off + len > DATA_BYTES ? DATA_BYTES - off
						       : len;
		ssize_t n = fetcher_read(v->f, v->co, buf, len, off);

		cr_assert_eq(n, (ssize_t)want, "read %zu at %llu: %zd", len,
			(unsigned long long)off, n);
		cr_assert_eq(memcmp(buf, data + off, want), 0, "bytes differ at %llu+%zu",
			(unsigned long long)off, len);
	}
	free(buf);
}

Test(fetch, random_ranges_over_http_equal_the_source)
{
	char url[256];
	struct fetch_stats st;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_eq(v.e.size, DATA_BYTES);
	cr_assert_not_null(v.e.etag, "nginx sends ETags");
	check_random_reads(&v, 300, 42);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.errors, 0);
	cr_expect_leq(st.requests, (DATA_BYTES + CHUNK - 1) / CHUNK, "each chunk fetched once");
	cr_expect_eq(count_log_settled("GET /data.bin", (int)st.requests), (int)st.requests);
	env_close(&v);
}

Test(fetch, a_wrong_if_match_fails_with_estale_and_is_not_retried)
{
	char url[256], buf[100];
	struct fetch_stats st;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	v.obj.etag = "\"not-the-etag\"";
	env_reopen(&v);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 5), -ESTALE);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.retries, 0);
	cr_expect_eq(st.requests, 1);
	cr_expect_eq(count_log_settled("\" 412 ", 1), 1);
	env_close(&v);
}

Test(fetch, an_older_mtime_without_etag_fails_with_estale)
{
	char url[256], buf[100];
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	v.obj.etag = NULL;
	v.obj.mtime.tv_sec -= 3600; /* the file changed after the listing: If-Unmodified-Since */
	env_reopen(&v);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 5), -ESTALE);
	env_close(&v);
}

Test(fetch, the_right_mtime_without_etag_reads_the_bytes)
{
	char url[256], buf[100];
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	v.obj.etag = NULL;
	env_reopen(&v);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 70000), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data + 70000, sizeof(buf)), 0);
	cr_assert_eq(count_log("If-Match"), 0); /* nginx does not log headers: sanity only */
	env_close(&v);
}

Test(fetch, a_size_that_no_longer_matches_fails_with_estale)
{
	char url[256], buf[100];
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	v.obj.etag = NULL;
	v.obj.mtime.tv_sec = 0;
	v.obj.size = DATA_BYTES + 5; /* Content-Range total differs */
	env_reopen(&v);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), -ESTALE);
	env_close(&v);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct reader_arg {
	struct env *v;
	ssize_t n;
	unsigned char buf[1000];
};

static void *reader(void *arg)
{
	struct reader_arg *a = arg;

	a->n = fetcher_read(a->v->f, a->v->co, a->buf, sizeof(a->buf), 3 * CHUNK + 17);
	return NULL;
}

Test(fetch, many_concurrent_readers_of_one_chunk_cause_one_get)
{
	struct reader_arg args[8];
	pthread_t th[8];
	char url[256];
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	for (int i = 0; i < 8; i++) {
		args[i].v = &v;
		pthread_create(&th[i], NULL, reader, &args[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].n, (ssize_t)sizeof(args[i].buf));
		cr_assert_eq(memcmp(args[i].buf, data + 3 * CHUNK + 17, sizeof(args[i].buf)), 0);
	}
	cr_expect_eq(count_log_settled("GET /data.bin", 1), 1);
	env_close(&v);
}

/* A chunk whose readahead GET hangs on a silent server, with readers asleep on it in the cache:
 * fetcher_abort fails the transfer, the readahead job fails the chunk, and every reader wakes
 * with EIO at once, long before curl's 5 s stall limit and its retries. */
Test(fetch, abort_wakes_every_reader_waiting_on_a_stalled_readahead_chunk)
{
	struct reader_arg args[6];
	pthread_t th[6];
	char url[256];
	struct env v;
	uint64_t t0, next;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_faultserver("stallheaders", 1));
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_eq(fetcher_prefetch(v.f, v.co, 3, 1, &next), 1);
	cr_assert_eq(next, 4, "went through the one chunk asked for");
	cr_assert_eq(fetcher_prefetch(v.f, v.co, 3, 1, &next), 0, "chunk 3 is being fetched");
	cr_assert_eq(next, 4);
	for (int i = 0; i < 6; i++) {
		args[i].v = &v;
		cr_assert_eq(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	usleep(500000); /* the GET is out and the readers are waiting for its chunk */
	t0 = mono_ms();
	fetcher_abort(v.f);
	for (int i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].n, -EIO, "reader %d got %zd", i, args[i].n);
	}
	cr_assert_lt(mono_ms() - t0, 3000, "the readers woke %llu ms after the abort",
		(unsigned long long)(mono_ms() - t0));
	env_close(&v);
}

Test(fetch, https_with_the_test_ca_works_and_without_it_fails)
{
	char url[256], ca[600], err[512] = "";
	struct remote *r = NULL;
	struct env v;

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/", start_nginx(true));
	snprintf(ca, sizeof(ca), "%s/ca.pem", state);
	cr_assert_neq(open_remote(&r, url, NULL, err, sizeof(err)), 0);
	cr_assert_null(r);
	cr_expect(strstr(err, "--ca-file") != NULL, "%s", err);
	cr_expect_null(strchr(err, '\n'));
	env_open(&v, url, ca, "data.bin", NULL);
	check_random_reads(&v, 40, 7);
	env_close(&v);
}

static bool expect_etag = true;

struct names {
	int nr, files, dirs;
	bool saw_special;
	uint64_t bytes;
};

static int count_entries(void *arg, const struct remote_entry *e)
{
	struct names *n = arg;

	n->nr++;
	n->files += e->type == REMOTE_FILE;
	n->dirs += e->type == REMOTE_DIR;
	n->bytes += e->size;
	if (!strcmp(e->name, "\xc3\xbc 100%.bin")) {
		n->saw_special = true;
		cr_expect_eq(e->size, 1000);
		cr_expect(!expect_etag || e->etag);
		cr_expect_gt(e->mtime.tv_sec, 1600000000);
	}
	return 0;
}

Test(fetch, lists_an_index_page_with_exact_sizes_and_decoded_names)
{
	char url[256];
	struct names n = { 0 };
	struct remote_entry e;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_eq(v.r->ops->list(v.r, "", count_entries, &n), 0);
	cr_expect_eq(n.nr, 3);
	cr_expect_eq(n.dirs, 1);
	cr_expect_eq(n.bytes, DATA_BYTES);
	memset(&n, 0, sizeof(n));
	cr_assert_eq(v.r->ops->list(v.r, "sub dir", count_entries, &n), 0);
	cr_expect_eq(n.nr, 1);
	cr_expect(n.saw_special);
	cr_assert_eq(v.r->ops->stat(v.r, "sub dir", &e), 0);
	cr_expect_eq(e.type, REMOTE_DIR);
	remote_entry_done(&e);
	cr_assert_eq(v.r->ops->stat(v.r, "sub dir/\xc3\xbc 100%.bin", &e), 0);
	cr_expect_eq(e.size, 1000);
	remote_entry_done(&e);
	cr_expect_eq(v.r->ops->stat(v.r, "nope", &e), -ENOENT);
	cr_expect_eq(v.r->ops->list(v.r, "nope", count_entries, &n), -ENOENT);
	env_close(&v);
}

Test(fetch, lists_a_directory_of_2000_files_in_well_under_a_few_seconds)
{
	char url[256], err[512];
	struct names n = { 0 };
	struct remote *r;
	struct timespec t0, t1;
	double s;

	sh("mkdir -p '%s/many' && cd '%s/many' && for i in $(seq 2000); do printf %%s $i > f$i; done",
		docroot, docroot);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	cr_assert_eq(open_remote(&r, url, NULL, err, sizeof(err)), 0, "%s", err);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(r->ops->list(r, "many", count_entries, &n), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_expect_eq(n.files, 2000);
	/* sum of the lengths of "1".."2000" */
	cr_expect_eq(n.bytes, 9 * 1 + 90 * 2 + 900 * 3 + 1001 * 4);
	cr_expect_lt(s, 3.0, "listing took %.2f s", s);
	fprintf(stderr, "listed 2000 files in %.3f s\n", s);
	r->ops->free(r);
}

Test(fetch, lists_from_the_manifest_in_one_request)
{
	char url[256], err[512], path[700];
	struct names n = { 0 };
	struct remote *r;
	struct env v;
	FILE *out;

	snprintf(path, sizeof(path), "%s/" MANIFEST_NAME, docroot);
	out = fopen(path, "w");
	cr_assert_eq(manifest_write_tree(docroot, out, err, sizeof(err)), 0, "%s", err);
	fclose(out);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	cr_assert_eq(open_remote(&r, url, NULL, err, sizeof(err)), 0, "%s", err);
	expect_etag = false;
	cr_assert_eq(r->ops->list(r, "", count_entries, &n), 0);
	cr_assert_eq(r->ops->list(r, "sub dir", count_entries, &n), 0);
	cr_expect_eq(n.nr, 4);
	cr_expect(n.saw_special);
	cr_expect_eq(count_log_settled("\"GET ", 1), 1);
	cr_expect_eq(count_log_settled("\"HEAD ", 0), 0);
	r->ops->free(r);
	/* the manifest has no ETags: reads are pinned by If-Unmodified-Since */
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_null(v.e.etag);
	check_random_reads(&v, 30, 3);
	env_close(&v);
}

Test(fetch, a_file_url_mounts_that_one_file)
{
	char url[256];
	struct names n = { 0 };
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/sub%%20dir/%%C3%%BC%%20100%%25.bin",
		start_nginx(false));
	env_open(&v, url, NULL, "\xc3\xbc 100%.bin", NULL);
	cr_assert_eq(v.r->ops->list(v.r, "", count_entries, &n), 0);
	cr_expect_eq(n.nr, 1);
	cr_expect(n.saw_special);
	v.obj.path = "";
	env_reopen(&v);
	{
		unsigned char buf[1000];

		cr_assert_eq(fetcher_read(v.f, v.co, buf, 2000, 0), 1000);
		cr_assert_eq(memcmp(buf, data, 1000), 0);
	}
	env_close(&v);
}

Test(fetch, bad_sources_fail_in_one_line)
{
	char url[256], err[512];
	struct remote *r = NULL;
	int port = start_nginx(false);

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/missing/", port);
	cr_expect_neq(open_remote(&r, url, NULL, err, sizeof(err)), 0);
	cr_expect(strstr(err, "404") != NULL, "%s", err);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/missing.bin", port);
	cr_expect_neq(open_remote(&r, url, NULL, err, sizeof(err)), 0);
	cr_expect(strstr(err, "404") != NULL, "%s", err);
	cr_expect_neq(open_remote(&r, "ftp://127.0.0.1/", NULL, err, sizeof(err)), 0);
	cr_expect(strstr(err, "not an http(s) URL") != NULL, "%s", err);
	sh("'%s/tests/lib/nginx.sh' stop '%s'", src_root, state);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	cr_expect_neq(open_remote(&r, url, NULL, err, sizeof(err)), 0);
	snprintf(url, sizeof(url), "cannot connect to 127.0.0.1:%d: Connection refused", port);
	cr_expect_str_eq(err, url);
	cr_expect_null(r);
}

Test(fetch, server_errors_are_retried_and_the_bytes_are_right)
{
	struct fetch_config fc = { .backoff_ms = 5, .max_retries = 5 };
	char url[256];
	struct fetch_stats st;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_faultserver("500", 2));
	env_open(&v, url, NULL, "data.bin", &fc);
	check_random_reads(&v, 40, 11);
	fetcher_get_stats(v.f, &st);
	cr_expect_gt(st.retries, 0);
	cr_expect_eq(st.errors, 0);
	env_close(&v);
}

static void expect_eio(const char *mode)
{
	struct fetch_config fc = { .backoff_ms = 2, .max_retries = 2 };
	char url[256], buf[5000];
	struct fetch_stats st;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_faultserver(mode, 1));
	env_open(&v, url, NULL, "data.bin", &fc);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 1000), -EIO, "%s", mode);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.requests, 3, "%s: one try and two retries", mode);
	cr_expect_eq(st.errors, 1);
	/* a later read fetches again rather than serving anything */
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 1000), -EIO);
	env_close(&v);
}

Test(fetch, a_short_body_every_time_gives_eio)
{
	expect_eio("truncate");
}

Test(fetch, a_reset_every_time_gives_eio)
{
	expect_eio("reset");
}

Test(fetch, a_500_every_time_gives_eio)
{
	expect_eio("500");
}

/* Answers that are not the bytes asked for: retried, then EIO, and nothing cached. Before
 * them the pooled chunk buffers hold another read's bytes, which a 204 used to pass off as
 * data. */
static void expect_never_data(const char *mode)
{
	struct fetch_config fc = { .backoff_ms = 2, .max_retries = 2 };
	char url[256], buf[5000];
	unsigned char *big = malloc(8 * CHUNK);
	struct fetch_stats st;
	struct env v;
	int port = start_faultserver("ok", 1);

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	env_open(&v, url, NULL, "data.bin", &fc);
	cr_assert_eq(fetcher_read(v.f, v.co, big, 8 * CHUNK, 10 * CHUNK), 8 * CHUNK);
	sh("curl -sf 'http://127.0.0.1:%d/_fault?mode=%s&every=1' >/dev/null", port, mode);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 1000), -EIO, "%s", mode);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.requests, 8 + 3, "%s: one try and two retries", mode);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 1000), -EIO, "%s", mode);
	/* Nothing of those answers was kept: a good server now gives the source's bytes. */
	sh("curl -sf 'http://127.0.0.1:%d/_fault?mode=ok' >/dev/null", port);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 1000), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data + 1000, sizeof(buf)), 0, "%s: wrong bytes", mode);
	env_close(&v);
	free(big);
}

Test(fetch, a_204_is_never_data)
{
	expect_never_data("204");
}

Test(fetch, a_203_with_other_bytes_is_never_data)
{
	expect_never_data("203");
}

Test(fetch, a_201_is_never_data)
{
	expect_never_data("201");
}

Test(fetch, a_whole_body_answering_a_range_is_never_data)
{
	expect_never_data("full200");
}

Test(fetch, another_ranges_bytes_are_never_data)
{
	expect_never_data("wrongrange");
}

Test(fetch, a_429_is_retried_after_its_retry_after)
{
	struct fetch_config fc = { .backoff_ms = 5, .max_retries = 3 };
	char url[256], buf[5000];
	struct fetch_stats st;
	struct timespec t0, t1;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_faultserver("429", 2));
	env_open(&v, url, NULL, "data.bin", &fc);
	/* The first GET is answered, the second (a 429 with Retry-After: 1) waits about 1 s
	 * where the backoff alone would have waited 5 ms. */
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 4 * CHUNK), (ssize_t)sizeof(buf));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_eq(memcmp(buf, data + 4 * CHUNK, sizeof(buf)), 0);
	cr_expect_geq((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 900);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.retries, 1);
	cr_expect_eq(st.errors, 0);
	env_close(&v);
}

Test(fetch, an_object_deleted_on_the_server_gives_enoent)
{
	char url[256], buf[1000], path[1024];
	struct fetch_stats st;
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	snprintf(path, sizeof(path), "%s/data.bin", docroot);
	cr_assert_eq(unlink(path), 0);
	/* docs/ferry.md: a 404 is ENOENT to the reader, at once (not retried); the cached
	 * chunk still reads. */
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 5 * CHUNK), -ENOENT);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.requests, 2);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data, sizeof(buf)), 0);
	env_close(&v);
}

Test(fetch, a_server_ignoring_if_match_is_caught_by_the_etag_of_its_answer)
{
	struct fetch_config fc = { .backoff_ms = 2, .max_retries = 2 };
	char url[256], buf[1000], path[1024];
	unsigned char *other = malloc(DATA_BYTES);
	struct fetch_stats st;
	struct timespec times[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
	struct env v;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/",
		start_faultserver_with("ok", 1, "--ignore-if-match"));
	env_open(&v, url, NULL, "data.bin", &fc);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	/* The same size, other bytes, another mtime: another ETag. */
	for (size_t i = 0; i < DATA_BYTES; i++)
		other[i] = (unsigned char)~data[i];
	write_bytes("data.bin", other, DATA_BYTES);
	snprintf(path, sizeof(path), "%s/data.bin", docroot);
	cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 5 * CHUNK), -ESTALE);
	fetcher_get_stats(v.f, &st);
	cr_expect_eq(st.requests, 2, "a changed object is not retried");
	/* The chunk read before the change still gives the old bytes, from the cache. */
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	cr_assert_eq(memcmp(buf, data, sizeof(buf)), 0);
	env_close(&v);
	free(other);
}

Test(fetch, make_resident_and_prefetch_fill_the_cache)
{
	char url[256], buf[CHUNK];
	struct fetch_stats st;
	struct env v;
	int gets;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_open(&v, url, NULL, "data.bin", NULL);
	cr_assert_eq(fetcher_make_resident(v.f, v.co, 0, 10 * CHUNK), 0);
	cr_expect_eq(cache_object_cached_bytes(v.co), 10 * CHUNK);
	fetcher_prefetch(v.f, v.co, 10, 1000, NULL);
	for (int i = 0; i < 200 && cache_object_cached_bytes(v.co) < DATA_BYTES; i++)
		usleep(20000);
	cr_expect_eq(cache_object_cached_bytes(v.co), DATA_BYTES);
	fetcher_get_stats(v.f, &st);
	gets = count_log_settled("GET /data.bin", (int)st.requests);
	cr_assert_eq(fetcher_read(v.f, v.co, buf, sizeof(buf), DATA_BYTES - 100), 100);
	cr_assert_eq(memcmp(buf, data + DATA_BYTES - 100, 100), 0);
	cr_expect_eq(count_log_settled("GET /data.bin", gets), gets, "served from the cache");
	env_close(&v);
}

/* A cache volume that stores but cannot read back (bad sectors): every read of a cached
 * chunk fails, the cache drops it, and a reader that keeps meeting it fetches it for itself. */
static ssize_t unreadable_pread(int fd, void *buf, size_t len, uint64_t off)
{
	return -EIO;
}

Test(fetch, a_cache_volume_that_cannot_read_back_never_fails_a_read)
{
	struct io_backend unreadable = io_sync_backend;
	char url[256];
	struct env v;

	unreadable.name = "unreadable";
	unreadable.pread = unreadable_pread;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", start_nginx(false));
	env_io = &unreadable;
	env_open(&v, url, NULL, "data.bin", NULL);
	env_io = NULL;
	check_random_reads(&v, 40, 5);
	check_random_reads(&v, 40, 5); /* the same ranges again: every one was cached */
	/* Readers of one chunk at once meet it stored by another and unreadable: none may give
	 * up with EIO (after three such meetings a reader fetches the chunk for itself). */
	struct reader_arg args[8];
	pthread_t t[8];

	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 8; i++) {
			args[i].v = &v;
			cr_assert_eq(pthread_create(&t[i], NULL, reader, &args[i]), 0);
		}
		for (int i = 0; i < 8; i++) {
			pthread_join(t[i], NULL);
			cr_assert_eq(args[i].n, (ssize_t)sizeof(args[i].buf), "round %d: %zd",
				round, args[i].n);
			cr_assert_eq(memcmp(args[i].buf, data + 3 * CHUNK + 17,
					     sizeof(args[i].buf)),
				0);
		}
	}
	env_close(&v);
}
