/* Tests of the source identity (fs/source_id.c), the name of a source's cache directory: what
 * is in it (written out by hand below), that changing any one component changes it, and that
 * spellings of the same source do not. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/source_id.h"

#define MiB (1u << 20)

static uint64_t id_of(const struct source_id_input *in)
{
	char err[256] = "";
	uint64_t id = 0;

	cr_assert_eq(source_id(in, &id, err, sizeof(err)), 0, "%s: %s", in->source, err);
	return id;
}

static uint64_t http_id(const char *url, uint32_t chunk_bytes)
{
	return id_of(&(struct source_id_input){ .source = url, .chunk_bytes = chunk_bytes });
}

static uint64_t s3_id(const char *src, const char *endpoint, const char *region,
	const char *addressing, uint32_t chunk_bytes)
{
	return id_of(&(struct source_id_input){ .source = src,
		.endpoint = endpoint,
		.region = region,
		.addressing = addressing,
		.chunk_bytes = chunk_bytes });
}

Test(source_id, holds_scheme_host_port_path_query_and_chunk_size_of_an_http_source)
{
	char *key = NULL, err[256];

	cr_assert_eq(source_id_key(
			     &(struct source_id_input){
				     .source = "HTTPS://Data.Example.ORG/sets/a/?t=1#frag",
				     .chunk_bytes = 8 * MiB },
			     &key, err, sizeof(err)),
		0, "%s", err);
	cr_expect_str_eq(key, "ferry-source-id 1\n"
			      "type http\n"
			      "scheme https\n"
			      "host data.example.org\n"
			      "port 443\n"
			      "path /sets/a\n"
			      "query ?t=1\n"
			      "chunk_bytes 8388608\n");
	free(key);
}

Test(source_id, holds_endpoint_region_addressing_bucket_prefix_and_chunk_size_of_an_s3_source)
{
	char *key = NULL, err[256];

	cr_assert_eq(source_id_key(&(struct source_id_input){ .source =
								      "s3://bucket//train/shards/",
					   .region = "eu-west-1",
					   .chunk_bytes = MiB },
			     &key, err, sizeof(err)),
		0, "%s", err);
	cr_expect_str_eq(key, "ferry-source-id 1\n"
			      "type s3\n"
			      "endpoint https://s3.eu-west-1.amazonaws.com:443\n"
			      "region eu-west-1\n"
			      "addressing auto\n"
			      "bucket bucket\n"
			      "prefix train/shards\n"
			      "chunk_bytes 1048576\n");
	free(key);
}

Test(source_id, changes_with_each_component_of_an_http_source)
{
	uint64_t base = http_id("http://h.example:8080/data/", MiB);

	cr_expect_neq(http_id("https://h.example:8080/data/", MiB), base, "scheme");
	cr_expect_neq(http_id("http://g.example:8080/data/", MiB), base, "host");
	cr_expect_neq(http_id("http://h.example:8081/data/", MiB), base, "port");
	cr_expect_neq(http_id("http://h.example:8080/data2/", MiB), base, "path");
	cr_expect_neq(http_id("http://h.example:8080/data/x", MiB), base, "path below");
	cr_expect_neq(http_id("http://h.example:8080/data?v=2", MiB), base, "query");
	cr_expect_neq(http_id("http://h.example:8080/data/", 2 * MiB), base, "chunk size");
}

Test(source_id, is_the_same_for_spellings_of_one_http_source)
{
	cr_expect_eq(http_id("http://h/data/", MiB), http_id("http://h/data", MiB),
		"trailing slash");
	cr_expect_eq(http_id("http://h/data/", MiB), http_id("http://h/data//", MiB),
		"trailing slashes");
	cr_expect_eq(http_id("http://h/data/", MiB), http_id("http://h:80/data/", MiB),
		"default port");
	cr_expect_eq(http_id("https://h/d/", MiB), http_id("https://h:443/d/", MiB),
		"default https port");
	cr_expect_eq(http_id("http://H.Example/d/", MiB), http_id("HTTP://h.example/d/", MiB),
		"case of scheme and host");
	cr_expect_eq(http_id("http://h/f?t=1#a", MiB), http_id("http://h/f?t=1", MiB), "fragment");
	cr_expect_eq(http_id("http://h", MiB), http_id("http://h/", MiB), "root");
}

Test(source_id, changes_with_each_component_of_an_s3_source)
{
	const char *ep = "http://127.0.0.1:7480";
	uint64_t base = s3_id("s3://b/p/", ep, "us-east-1", "path", MiB);

	cr_expect_neq(s3_id("s3://b/p/", "http://127.0.0.1:7481", "us-east-1", "path", MiB), base,
		"endpoint port");
	cr_expect_neq(s3_id("s3://b/p/", "http://127.0.0.2:7480", "us-east-1", "path", MiB), base,
		"endpoint host");
	cr_expect_neq(s3_id("s3://b/p/", "https://127.0.0.1:7480", "us-east-1", "path", MiB), base,
		"endpoint scheme");
	cr_expect_neq(s3_id("s3://b/p/", NULL, "us-east-1", "path", MiB), base, "AWS endpoint");
	cr_expect_neq(s3_id("s3://b/p/", ep, "eu-west-1", "path", MiB), base, "region");
	cr_expect_neq(s3_id("s3://b/p/", ep, "us-east-1", "virtual", MiB), base, "addressing");
	cr_expect_neq(s3_id("s3://c/p/", ep, "us-east-1", "path", MiB), base, "bucket");
	cr_expect_neq(s3_id("s3://b/q/", ep, "us-east-1", "path", MiB), base, "prefix");
	cr_expect_neq(s3_id("s3://b/", ep, "us-east-1", "path", MiB), base, "no prefix");
	cr_expect_neq(s3_id("s3://b/p/", ep, "us-east-1", "path", 4 * MiB), base, "chunk size");
	/* Without an endpoint, the region picks AWS's endpoint: two regions, two caches. */
	cr_expect_neq(s3_id("s3://b/p/", NULL, "us-east-1", NULL, MiB),
		s3_id("s3://b/p/", NULL, "us-west-2", NULL, MiB), "region of the AWS endpoint");
}

Test(source_id, is_the_same_for_spellings_of_one_s3_source)
{
	cr_expect_eq(s3_id("s3://b/p/", NULL, "us-east-1", NULL, MiB),
		s3_id("s3://b/p", "https://s3.us-east-1.amazonaws.com", "us-east-1", "auto", MiB),
		"AWS's endpoint named or not, auto addressing named or not, trailing slash");
	cr_expect_eq(s3_id("s3://b/p/", NULL, NULL, NULL, MiB),
		s3_id("s3://b/p/", NULL, "us-east-1", NULL, MiB), "the default region");
	cr_expect_eq(s3_id("s3://b/p/", "http://127.0.0.1:80/", "r", NULL, MiB),
		s3_id("s3://b//p//", "HTTP://127.0.0.1", "r", NULL, MiB),
		"endpoint default port, slashes, case");
	cr_expect_eq(s3_id("s3://b", NULL, NULL, NULL, MiB),
		s3_id("s3://b/", NULL, NULL, NULL, MiB), "bucket root");
}

Test(source_id, is_the_realpath_of_a_local_directory)
{
	char dir[] = "/tmp/ferry-sid-XXXXXX", other[] = "/tmp/ferry-sid-XXXXXX";
	char link[64], slashed[64], *key = NULL, err[256];
	struct source_id_input in = { .chunk_bytes = MiB };
	uint64_t a;

	cr_assert(mkdtemp(dir));
	cr_assert(mkdtemp(other));
	snprintf(link, sizeof(link), "%s-link", dir);
	cr_assert_eq(symlink(dir, link), 0);
	snprintf(slashed, sizeof(slashed), "%s//", dir);
	in.source = dir;
	a = id_of(&in);
	in.source = link;
	cr_expect_eq(id_of(&in), a, "through a symlink");
	in.source = slashed;
	cr_expect_eq(id_of(&in), a, "trailing slashes");
	in.source = other;
	cr_expect_neq(id_of(&in), a, "another directory");
	in.source = dir;
	in.chunk_bytes = 2 * MiB;
	cr_expect_neq(id_of(&in), a, "chunk size");
	cr_assert_eq(source_id_key(&in, &key, err, sizeof(err)), 0);
	cr_expect(strstr(key, "\ntype dir\n") && strstr(key, dir), "%s", key);
	free(key);
	unlink(link);
	rmdir(dir);
	rmdir(other);
}

Test(source_id, refuses_a_bad_endpoint_with_a_reason)
{
	struct source_id_input in = { .source = "s3://b/p/",
		.endpoint = "ftp://x",
		.chunk_bytes = MiB };
	char err[256] = "";
	uint64_t id;

	cr_expect_eq(source_id(&in, &id, err, sizeof(err)), -EINVAL);
	cr_expect_neq(err[0], '\0');
	in.endpoint = "http://h:9000/path";
	err[0] = '\0';
	cr_expect_eq(source_id(&in, &id, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "endpoint"), "%s", err);
}
