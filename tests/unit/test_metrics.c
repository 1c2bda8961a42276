/* The metrics of a mount (fs/metrics.h): --metrics-addr parsing, a latency histogram's buckets
 * after known observations, and the exposition page rendered from a real cache and fetcher
 * (over a local directory source), read line by line as a scraper reads it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/cache.h"
#include "fs/fetch.h"
#include "fs/fuse_i.h"
#include "fs/metrics.h"
#include "fs/remote/remote.h"

/* A build without the metrics server (metrics_none.c) refuses every address. */
static bool have_server(void)
{
	char err[256];

	return metrics_check_addr("127.0.0.1:9100", err, sizeof(err)) != -ENOTSUP;
}

Test(metrics_addr, accepts_host_port_names_and_bracketed_ipv6)
{
	static const char *good[] = { "127.0.0.1:9100", "0.0.0.0:1", "localhost:65535",
		"metrics.example.com:9464", "[::1]:9100", "[fe80::1%lo]:80", "10.0.0.5:09100" };
	char err[256];

	if (!have_server())
		cr_skip_test("this build has no metrics server");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(metrics_check_addr(good[i], err, sizeof(err)), 0, "%s: %s", good[i],
			err);
	}
}

Test(metrics_addr, refuses_bad_forms_with_one_line_naming_the_value)
{
	static const char *bad[] = { "", ":9100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
		"127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:80x",
		"127.0.0.1: 80", "::1:9100", "[::1]9100", "[::1", "[]:9100",
		"127.0.0.1:99999999999999999999" };
	char err[256];

	if (!have_server())
		cr_skip_test("this build has no metrics server");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(metrics_check_addr(bad[i], err, sizeof(err)), -EINVAL, "%s accepted",
			bad[i]);
		cr_expect(strstr(err, "--metrics-addr") && !strchr(err, '\n'), "%s: '%s'", bad[i],
			err);
	}
}

Test(metrics_addr, refuses_a_host_longer_than_a_name_can_be)
{
	char addr[400], err[1024];

	if (!have_server())
		cr_skip_test("this build has no metrics server");
	memset(addr, 'a', 300);
	strcpy(addr + 300, ":9100");
	cr_expect_eq(metrics_check_addr(addr, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "too long"), "%s", err);
}

Test(metrics_addr, without_a_server_says_so_in_one_line)
{
	char err[256] = "";

	if (have_server())
		cr_skip_test("this build has a metrics server");
	cr_expect_eq(metrics_check_addr("127.0.0.1:9100", err, sizeof(err)), -ENOTSUP);
	cr_expect(strstr(err, "this build has no metrics server") && !strchr(err, '\n'), "%s", err);
}

Test(metrics_histogram, counts_each_observation_in_the_first_bound_not_below_it)
{
	struct metrics_histogram h;

	metrics_histogram_init(&h, METRICS_LATENCY_FUSE_READ);
	cr_assert_eq(h.nr_bounds, 17);
	cr_assert_eq(h.bounds_ns[0], 100000u);
	metrics_observe_ns(&h, 0);
	metrics_observe_ns(&h, 100000);         /* on the bound: le is inclusive */
	metrics_observe_ns(&h, 100001);         /* just above: the next bucket */
	metrics_observe_ns(&h, 30000000000ull); /* the last bound */
	metrics_observe_ns(&h, 30000000001ull); /* above every bound: +Inf only */
	cr_expect_eq(h.counts[0], 2);
	cr_expect_eq(h.counts[1], 1);
	cr_expect_eq(h.counts[16], 1);
	cr_expect_eq(h.counts[17], 1);
	cr_expect_eq(h.sum_ns, 100000ull + 100001ull + 30000000000ull + 30000000001ull);

	metrics_histogram_init(&h, METRICS_LATENCY_ORIGIN_REQUEST);
	cr_assert_eq(h.nr_bounds, 15);
	cr_expect_eq(h.bounds_ns[0], 1000000u);
	cr_expect_eq(h.bounds_ns[14], 60000000000ull);
	for (unsigned i = 0; i <= METRICS_MAX_BOUNDS; i++)
		cr_expect_eq(h.counts[i], 0, "init left counts[%u]", i);
}

/* A ferryfs with a real cache and fetcher over a local directory: what render() reads. */
static char tmp[] = "/tmp/ferry-test-metrics-XXXXXX";
static struct ferryfs fs;
static struct remote *r;

static void setup(void)
{
	struct cache_config cc = { .chunk_bytes = 1u << 20 };
	struct fetch_config fc = { 0 };
	char err[512] = "", src[600], cdir[600];

	cr_assert(mkdtemp(tmp), "mkdtemp");
	snprintf(src, sizeof(src), "%s/src", tmp);
	snprintf(cdir, sizeof(cdir), "%s/cache", tmp);
	cr_assert_eq(mkdir(src, 0700), 0);
	cr_assert_eq(remote_dir_ops.open(&r, src, NULL, err, sizeof(err)), 0, "%s", err);
	cc.dir = cdir;
	memset(&fs, 0, sizeof(fs));
	cr_assert_eq(cache_open(&fs.cache, &cc, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fetcher_new(&fs.fetcher, r, fs.cache, &fc), 0);
	fs.chunk_bytes = cc.chunk_bytes;
	clock_gettime(CLOCK_MONOTONIC, &fs.started);
	metrics_histogram_init(&fs.read_latency, METRICS_LATENCY_FUSE_READ);
}

static void teardown(void)
{
	char cmd[200];

	fetcher_free(fs.fetcher);
	cache_free(fs.cache);
	r->ops->free(r);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	cr_expect_eq(system(cmd), 0);
}

/* The value of the sample whose name (labels included) is exactly name; NAN: none. */
static double sample(const char *text, const char *name)
{
	size_t n = strlen(name);
	const char *p;

	for (p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, name, n) && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	return NAN;
}

Test(metrics_render, histogram_buckets_are_cumulative_and_inf_is_the_count, .init = setup,
	.fini = teardown)
{
	static const char *les[] = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
		"0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30" };
	/* observations: 50 us, 100 us, 100.001 us, 3 ms, 2 s, 1 h */
	static const double want[] = { 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5 };
	const char *h = "ferry_fuse_read_duration_seconds";
	char name[200], *text;
	size_t len;

	metrics_observe_ns(&fs.read_latency, 50000);
	metrics_observe_ns(&fs.read_latency, 100000);
	metrics_observe_ns(&fs.read_latency, 100001);
	metrics_observe_ns(&fs.read_latency, 3000000);
	metrics_observe_ns(&fs.read_latency, 2000000000);
	metrics_observe_ns(&fs.read_latency, 3600000000000ull);
	cr_assert_eq(metrics_render(&fs, &text, &len), 0);
	cr_assert_eq(strlen(text), len);
	for (size_t i = 0; i < sizeof(les) / sizeof(les[0]); i++) {
		snprintf(name, sizeof(name), "%s_bucket{le=\"%s\"}", h, les[i]);
		cr_expect_eq(sample(text, name), want[i], "%s: %g, want %g", name,
			sample(text, name), want[i]);
	}
	snprintf(name, sizeof(name), "%s_bucket{le=\"+Inf\"}", h);
	cr_expect_eq(sample(text, name), 6);
	snprintf(name, sizeof(name), "%s_count", h);
	cr_expect_eq(sample(text, name), 6);
	snprintf(name, sizeof(name), "%s_sum", h);
	cr_expect(fabs(sample(text, name) - 3602.003250001) < 1e-6, "sum %.9f", sample(text, name));
	/* nothing observed: every bucket, the count and the sum are 0 */
	cr_expect_eq(sample(text, "ferry_origin_request_duration_seconds_bucket{le=\"+Inf\"}"), 0);
	cr_expect_eq(sample(text, "ferry_origin_request_duration_seconds_bucket{le=\"0.001\"}"), 0);
	cr_expect_eq(sample(text, "ferry_origin_request_duration_seconds_count"), 0);
	cr_expect_eq(sample(text, "ferry_origin_request_duration_seconds_sum"), 0);
	free(text);
}

/* The family a sample belongs to: its name less a histogram's _bucket/_sum/_count. */
static void family_of(const char *name, const char *type, char *fam, size_t len)
{
	static const char *sfx[] = { "_bucket", "_sum", "_count" };
	size_t n = strlen(name), k;

	snprintf(fam, len, "%s", name);
	if (!type || strcmp(type, "histogram"))
		return;
	for (size_t i = 0; i < 3; i++) {
		k = strlen(sfx[i]);
		if (n > k && !strcmp(name + n - k, sfx[i]))
			fam[n - k] = '\0';
	}
}

Test(metrics_render, every_line_is_well_formed_and_follows_its_help_and_type, .init = setup,
	.fini = teardown)
{
	regex_t name_re, sample_re, help_re, type_re;
	char *text, *line, *save = NULL, fam[200], cur[200] = "", cur_type[32] = "";
	char helped[200] = "";
	regmatch_t m[4];
	unsigned nr_samples = 0, nr_families = 0, lineno = 0;
	size_t len;

	cr_assert_eq(regcomp(&name_re, "^[a-zA-Z_:][a-zA-Z0-9_:]*$", REG_EXTENDED | REG_NOSUB), 0);
	/* name, optional {label="value",...}, one space, a number */
	cr_assert_eq(
		regcomp(&sample_re,
			"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\\n]*\""
			"(,[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\\n]*\")*\\})? "
			"(-?[0-9]+(\\.[0-9]+)?(e[-+]?[0-9]+)?|\\+Inf|NaN)$",
			REG_EXTENDED),
		0);
	cr_assert_eq(regcomp(&help_re, "^# HELP ([^ ]+) [^ ].*$", REG_EXTENDED), 0);
	cr_assert_eq(regcomp(&type_re, "^# TYPE ([^ ]+) (counter|gauge|histogram)$", REG_EXTENDED),
		0);
	metrics_observe_ns(&fs.read_latency, 1234567);
	cr_assert_eq(metrics_render(&fs, &text, &len), 0);
	cr_assert(len > 0 && text[len - 1] == '\n', "the page does not end in a newline");
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (!regexec(&help_re, line, 2, m, 0)) {
			snprintf(helped, sizeof(helped), "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
				line + m[1].rm_so);
			cr_expect_eq(regexec(&name_re, helped, 0, NULL, 0), 0, "line %u: %s",
				lineno, line);
			cr_expect(strcmp(helped, cur), "line %u: a second HELP for %s", lineno,
				cur);
			cur[0] = '\0';
			continue;
		}
		if (!regexec(&type_re, line, 3, m, 0)) {
			snprintf(cur, sizeof(cur), "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
				line + m[1].rm_so);
			snprintf(cur_type, sizeof(cur_type), "%.*s", (int)(m[2].rm_eo - m[2].rm_so),
				line + m[2].rm_so);
			cr_expect_str_eq(cur, helped, "line %u: TYPE %s right after HELP %s",
				lineno, cur, helped);
			nr_families++;
			continue;
		}
		cr_expect_neq(line[0], '#', "line %u: a comment that is neither HELP nor TYPE: %s",
			lineno, line);
		if (regexec(&sample_re, line, 2, m, 0)) {
			cr_expect_fail("line %u malformed: %s", lineno, line);
			continue;
		}
		line[m[1].rm_eo] = '\0';
		family_of(line, cur_type, fam, sizeof(fam));
		cr_expect(cur[0] && !strcmp(fam, cur),
			"line %u: sample %s not under its own HELP and TYPE (under '%s')", lineno,
			line, cur);
		nr_samples++;
	}
	cr_expect_geq(nr_families, 30, "only %u families", nr_families);
	cr_expect_geq(nr_samples, nr_families, "only %u samples", nr_samples);
	free(text);
	regfree(&name_re);
	regfree(&sample_re);
	regfree(&help_re);
	regfree(&type_re);
}
