/* Tests of the manifest parser and writer (fs/manifest.c): round trips of a real tree, and
 * hostile manifests refused with the line number. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/manifest.h"

#define MAX_SEEN 64

struct seen {
	int nr;
	struct remote_entry e[MAX_SEEN];
};

static int collect(void *arg, const struct remote_entry *e)
{
	struct seen *s = arg;
	struct remote_entry *d = &s->e[s->nr++];

	cr_assert_leq(s->nr, MAX_SEEN);
	*d = *e;
	d->name = strdup(e->name);
	d->etag = e->etag ? strdup(e->etag) : NULL;
	d->link_target = e->link_target ? strdup(e->link_target) : NULL;
	return 0;
}

static void seen_done(struct seen *s)
{
	for (int i = 0; i < s->nr; i++)
		remote_entry_done(&s->e[i]);
}

static int parse(const char *text, struct seen *s, char *err, size_t errlen)
{
	return manifest_parse(text, strlen(text), collect, s, err, errlen);
}

Test(manifest, parses_every_field)
{
	const char *m = "ferry-manifest 1\n"
			"d 0 1700000000.5 - a%20dir\n"
			"f 12345 1700000001.123456789 %2265af-3039%22 a%20dir/f%25.bin\n"
			"l 3 1700000002.000000000 - a%20dir/link ..%2Ff%25.bin\n";
	struct seen s = { 0 };
	char err[256];

	cr_assert_eq(parse(m, &s, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(s.nr, 3);
	cr_expect_eq(s.e[0].type, REMOTE_DIR);
	cr_expect_str_eq(s.e[0].name, "a dir");
	cr_expect_eq(s.e[0].mtime.tv_sec, 1700000000);
	cr_expect_eq(s.e[0].mtime.tv_nsec, 500000000);
	cr_expect_null(s.e[0].etag);
	cr_expect_eq(s.e[1].type, REMOTE_FILE);
	cr_expect_eq(s.e[1].size, 12345);
	cr_expect_eq(s.e[1].mtime.tv_nsec, 123456789);
	cr_expect_str_eq(s.e[1].etag, "\"65af-3039\"");
	cr_expect_str_eq(s.e[1].name, "a dir/f%.bin");
	cr_expect_eq(s.e[2].type, REMOTE_SYMLINK);
	cr_expect_str_eq(s.e[2].link_target, "../f%.bin");
	seen_done(&s);
}

Test(manifest, refuses_hostile_lines_with_their_number)
{
	static const char *bad[] = {
		"x 1 1.0 - a",                    /* type */
		"f -1 1.0 - a",                   /* size */
		"f 99999999999999999999 1.0 - a", /* size overflow */
		"f 1 1.0 - ../etc/passwd",        /* parent */
		"f 1 1.0 - /abs",                 /* absolute */
		"f 1 1.0 - a//b",                 /* empty component */
		"f 1 1.0 - a/./b",                /* dot */
		"f 1 1.0 - a%2F..%2Fb",           /* .. by escape */
		"f 1 1.0 - a%00b",                /* NUL by escape */
		"f 1 1.0 - a%zz",                 /* bad escape */
		"f 1 1.0 - a/",                   /* trailing slash */
		"f 1 1.0000000000 - a",           /* 10 fraction digits */
		"f 1 x - a",                      /* mtime */
		"f 1 1.0 -",                      /* missing path */
		"f 1 1.0 - a b",                  /* extra field */
		"f  1 1.0 - a",                   /* double space */
		"l 1 1.0 - a",                    /* link without target */
		"f 1 1.0 - a ",                   /* trailing space */
		"",                               /* blank line */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char m[512], err[256] = "";
		struct seen s = { 0 };

		snprintf(m, sizeof(m), "ferry-manifest 1\nf 1 1.0 - ok\n%s\nf 2 2.0 - ok2\n",
			bad[i]);
		cr_expect_eq(parse(m, &s, err, sizeof(err)), -EINVAL, "accepted '%s'", bad[i]);
		cr_expect(strstr(err, "line 3") != NULL, "'%s': %s", bad[i], err);
		seen_done(&s);
	}
}

Test(manifest, refuses_a_component_over_255_bytes_and_accepts_255)
{
	char m[1024], err[256];
	struct seen s = { 0 };

	snprintf(m, sizeof(m), "ferry-manifest 1\nf 1 1.0 - %0255d\n", 0);
	cr_assert_eq(parse(m, &s, err, sizeof(err)), 0, "%s", err);
	seen_done(&s);
	snprintf(m, sizeof(m), "ferry-manifest 1\nf 1 1.0 - %0256d\n", 0);
	cr_assert_eq(parse(m, &s, err, sizeof(err)), -EINVAL);
}

Test(manifest, refuses_a_missing_or_wrong_header)
{
	char err[256];
	struct seen s = { 0 };

	cr_expect_eq(parse("", &s, err, sizeof(err)), -EINVAL);
	cr_expect_eq(parse("ferry-manifest 2\n", &s, err, sizeof(err)), -EINVAL);
	cr_expect_eq(parse("f 1 1.0 - a\n", &s, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "line 1") != NULL, "%s", err);
	cr_expect_eq(manifest_parse("ferry-manifest 1\nf 1 1.0 - a\0b\n", 29, collect, &s, err,
			     sizeof(err)),
		-EINVAL);
}

Test(manifest, accepts_crlf_and_a_missing_final_newline)
{
	char err[256];
	struct seen s = { 0 };

	cr_assert_eq(parse("ferry-manifest 1\r\nf 1 1.0 - a\r\nf 2 2.0 - b", &s, err, sizeof(err)),
		0, "%s", err);
	cr_assert_eq(s.nr, 2);
	cr_expect_str_eq(s.e[1].name, "b");
	seen_done(&s);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	fclose(f);
}

Test(manifest, writes_a_local_tree_that_parses_back_to_the_same_entries)
{
	char dir[] = "/tmp/ferry-manifest-XXXXXX", path[512], err[256] = "", *text = NULL;
	size_t tl = 0;
	struct seen s = { 0 };
	struct stat st;
	FILE *out;
	int i;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub dir", dir);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sub dir/100%% \xc3\xbc\nnl.bin", dir);
	write_file(path, "0123456789");
	snprintf(path, sizeof(path), "%s/empty", dir);
	write_file(path, "");
	snprintf(path, sizeof(path), "%s/link", dir);
	cr_assert_eq(symlink("sub dir/x y", path), 0);
	snprintf(path, sizeof(path), "%s/" MANIFEST_NAME, dir);
	write_file(path, "old manifest, not listed");

	out = open_memstream(&text, &tl);
	cr_assert_eq(manifest_write_tree(dir, out, err, sizeof(err)), 0, "%s", err);
	fclose(out);
	cr_assert_eq(manifest_parse(text, tl, collect, &s, err, sizeof(err)), 0, "%s\n%s", err,
		text);
	cr_assert_eq(s.nr, 4, "%s", text);
	/* byte order of names, depth first */
	cr_expect_str_eq(s.e[0].name, "empty");
	cr_expect_str_eq(s.e[1].name, "link");
	cr_expect_str_eq(s.e[2].name, "sub dir");
	cr_expect_str_eq(s.e[3].name, "sub dir/100% \xc3\xbc\nnl.bin");
	cr_expect_eq(s.e[1].type, REMOTE_SYMLINK);
	cr_expect_str_eq(s.e[1].link_target, "sub dir/x y");
	cr_expect_eq(s.e[2].type, REMOTE_DIR);
	cr_expect_eq(s.e[3].size, 10);
	snprintf(path, sizeof(path), "%s/sub dir/100%% \xc3\xbc\nnl.bin", dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(s.e[3].mtime.tv_sec, st.st_mtim.tv_sec);
	cr_expect_eq(s.e[3].mtime.tv_nsec, st.st_mtim.tv_nsec);
	for (i = 0; i < s.nr; i++)
		cr_expect_null(s.e[i].etag);
	seen_done(&s);
	free(text);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	cr_assert_eq(system(path), 0);
}

Test(manifest, reports_a_missing_tree_in_one_line)
{
	char err[256] = "";
	FILE *out = fopen("/dev/null", "w");

	cr_assert_eq(manifest_write_tree("/nonexistent/ferry", out, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "/nonexistent/ferry") != NULL, "%s", err);
	fclose(out);
}

/* Found by fuzz_manifest (tests/fuzz/corpus/manifest/etag_dash.manifest): "-" is the field
 * for "no ETag", so an ETag that is a lone '-' came back as none and lost its version. */
Test(manifest, an_etag_of_one_dash_reads_back_as_that_etag)
{
	struct remote_entry e = { .type = REMOTE_FILE, .size = 1, .etag = "-" };
	struct seen s = { 0 };
	char *text = NULL, err[256];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	cr_assert_eq(manifest_write_header(f), 0);
	cr_assert_eq(manifest_write_entry(f, "a", &e), 0);
	e.etag = NULL;
	cr_assert_eq(manifest_write_entry(f, "b", &e), 0);
	fclose(f);
	cr_assert_eq(manifest_parse(text, len, collect, &s, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(s.nr, 2);
	cr_expect_str_eq(s.e[0].etag, "-", "written as: %s", text);
	cr_expect_null(s.e[1].etag);
	seen_done(&s);
	free(text);
}

/* The writer formats lines by hand (no fprintf): each field exactly as docs/ferry.md says,
 * including a negative mtime, zero-padded nanoseconds, escapes and a long path. */
Test(manifest, writes_each_field_as_documented)
{
	struct remote_entry f = { .type = REMOTE_FILE,
		.size = 18446744073709551615ull,
		.mtime = { .tv_sec = -2, .tv_nsec = 5 },
		.etag = "\"x y\"" };
	struct remote_entry d = { .type = REMOTE_DIR, .size = 7, .mtime = { .tv_sec = 0 } };
	struct remote_entry l = { .type = REMOTE_SYMLINK,
		.size = 3,
		.mtime = { .tv_sec = 1700000000, .tv_nsec = 999999999 },
		.link_target = "../a b" };
	char *text = NULL, *want = NULL, long_path[3000];
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	memset(long_path, '%', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	cr_assert_not_null(out);
	cr_assert_eq(manifest_write_entry(out, "dir/f%1~.-_", &f), 0);
	cr_assert_eq(manifest_write_entry(out, "dir", &d), 0);
	cr_assert_eq(manifest_write_entry(out, "dir/ln", &l), 0);
	cr_assert_eq(manifest_write_entry(out, long_path, &d), 0);
	fclose(out);
	cr_assert(asprintf(&want,
			  "f 18446744073709551615 -2.000000005 %%22x%%20y%%22 dir/f%%251~.-_\n"
			  "d 0 0.000000000 - dir\n"
			  "l 3 1700000000.999999999 - dir/ln ..%%2Fa%%20b\n"
			  "d 0 0.000000000 - %s\n",
			  "") > 0);
	cr_expect_eq(strncmp(text, want, strlen(want) - 1), 0, "wrote:\n%.300s", text);
	cr_expect_eq(len, strlen(want) + 3 * (sizeof(long_path) - 1));
	free(want);
	free(text);
}

static struct manifest_index *index_of(const char *text)
{
	struct manifest_index *m = NULL;
	char err[256];

	cr_assert_eq(manifest_index_new(&m, text, strlen(text), err, sizeof(err)), 0, "%s", err);
	return m;
}

Test(manifest, index_lists_each_directory_with_its_own_entries_only)
{
	/* "a b" sorts between "a" and "a/x" bytewise ('/' > ' '): the parent order must not
	 * mix "a"'s children with "a b"'s. */
	struct manifest_index *m = index_of("ferry-manifest 1\n"
					    "d 0 1.0 - a\n"
					    "f 1 1.0 %22e1%22 a/x\n"
					    "d 0 1.0 - a%20b\n"
					    "f 22 2.5 - a%20b/y\n"
					    "l 1 1.0 - a/ln x\n"
					    "f 3 1.0 - top\n");
	struct seen s = { 0 };

	cr_assert_eq(manifest_index_list(m, "a", collect, &s), 0);
	cr_assert_eq(s.nr, 2);
	cr_expect_str_eq(s.e[0].name, "ln");
	cr_expect_str_eq(s.e[0].link_target, "x");
	cr_expect_str_eq(s.e[1].name, "x");
	cr_expect_str_eq(s.e[1].etag, "\"e1\"");
	cr_expect_eq(s.e[1].size, 1);
	seen_done(&s);
	s.nr = 0;
	cr_assert_eq(manifest_index_list(m, "a b", collect, &s), 0);
	cr_assert_eq(s.nr, 1);
	cr_expect_str_eq(s.e[0].name, "y");
	cr_expect_eq(s.e[0].size, 22);
	cr_expect_eq(s.e[0].mtime.tv_nsec, 500000000);
	cr_expect_null(s.e[0].etag);
	seen_done(&s);
	s.nr = 0;
	cr_assert_eq(manifest_index_list(m, "", collect, &s), 0);
	cr_expect_eq(s.nr, 3, "a, a b, top");
	seen_done(&s);
	cr_expect_eq(manifest_index_list(m, "top", collect, &s), -ENOTDIR);
	cr_expect_eq(manifest_index_list(m, "nope", collect, &s), -ENOENT);
	cr_expect_eq(manifest_index_nr_entries(m), 6);
	manifest_index_free(m);
}

Test(manifest, index_adds_directories_the_manifest_leaves_out)
{
	struct manifest_index *m = index_of("ferry-manifest 1\nf 5 1.0 - p/q/r/file\n");
	struct remote_entry e;
	struct seen s = { 0 };

	cr_expect_eq(manifest_index_nr_entries(m), 4);
	cr_assert_eq(manifest_index_stat(m, "p/q", &e), 0);
	cr_expect_eq(e.type, REMOTE_DIR);
	cr_expect_str_eq(e.name, "q");
	remote_entry_done(&e);
	cr_assert_eq(manifest_index_stat(m, "p/q/r/file", &e), 0);
	cr_expect_eq(e.type, REMOTE_FILE);
	cr_expect_eq(e.size, 5);
	remote_entry_done(&e);
	cr_assert_eq(manifest_index_list(m, "p/q/r", collect, &s), 0);
	cr_expect_eq(s.nr, 1);
	seen_done(&s);
	cr_expect_eq(manifest_index_stat(m, "p/q/r/other", &e), -ENOENT);
	manifest_index_free(m);
}

Test(manifest, index_keeps_the_first_of_a_path_listed_twice)
{
	struct manifest_index *m = index_of("ferry-manifest 1\n"
					    "f 1 1.0 - same\n"
					    "f 2 1.0 - other\n"
					    "f 3 1.0 - same\n");
	struct remote_entry e;

	cr_expect_eq(manifest_index_nr_entries(m), 2);
	cr_assert_eq(manifest_index_stat(m, "same", &e), 0);
	cr_expect_eq(e.size, 1, "the first line wins");
	remote_entry_done(&e);
	manifest_index_free(m);
	/* The entries under a path listed twice are under its first line, whatever its second. */
	m = index_of("ferry-manifest 1\n"
		     "d 0 1.0 - d\n"
		     "f 9 1.0 - d\n"
		     "f 1 1.0 - d/in\n");
	cr_assert_eq(manifest_index_stat(m, "d/in", &e), 0);
	remote_entry_done(&e);
	cr_assert_eq(manifest_index_stat(m, "d", &e), 0);
	cr_expect_eq(e.type, REMOTE_DIR);
	remote_entry_done(&e);
	manifest_index_free(m);
}

Test(manifest, index_refuses_an_entry_under_a_file)
{
	const char *text = "ferry-manifest 1\nf 1 1.0 - a\nf 1 1.0 - a/b\n";
	struct manifest_index *m = (void *)1;
	char err[256] = "";

	cr_expect_eq(manifest_index_new(&m, text, strlen(text), err, sizeof(err)), -EINVAL);
	cr_expect_null(m);
	cr_expect(strstr(err, "not a directory"), "%s", err);
}
