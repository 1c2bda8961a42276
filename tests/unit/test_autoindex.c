/* Tests of the directory-page parser against a page captured from nginx and Apache 2.4 pages
 * written to mod_autoindex's documented formats, all of the same tree (tests/unit/data/). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/autoindex.h"

#define MAX_SEEN 64

struct seen {
	int nr;
	char *name[MAX_SEEN];
	enum remote_type type[MAX_SEEN];
	bool exact[MAX_SEEN];
	uint64_t size[MAX_SEEN];
	time_t mtime[MAX_SEEN];
};

static int collect(void *arg, const struct autoindex_entry *e)
{
	struct seen *s = arg;

	cr_assert_lt(s->nr, MAX_SEEN);
	s->name[s->nr] = strdup(e->name);
	s->type[s->nr] = e->type;
	s->exact[s->nr] = e->size_exact;
	s->size[s->nr] = e->size;
	s->mtime[s->nr] = e->mtime;
	s->nr++;
	return 0;
}

static void seen_done(struct seen *s)
{
	for (int i = 0; i < s->nr; i++)
		free(s->name[i]);
}

static int find(const struct seen *s, const char *name)
{
	for (int i = 0; i < s->nr; i++)
		if (!strcmp(s->name[i], name))
			return i;
	return -1;
}

/* The tree the pages show (made with touch -d '2024-01-23 10:00:00 UTC'). */
static const struct {
	const char *name;
	enum remote_type type;
	uint64_t size;
} tree[] = {
	{ "dir with space", REMOTE_DIR, 0 },
	{ "sub", REMOTE_DIR, 0 },
	{ "100%.bin", REMOTE_FILE, 12345 },
	{ "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL.dat", REMOTE_FILE, 2 },
	{ "a b.txt", REMOTE_FILE, 5 },
	{ "a&b<c>.txt", REMOTE_FILE, 4 },
	{ "big.bin", REMOTE_FILE, 3000000 },
	{ "empty", REMOTE_FILE, 0 },
	{ "x:y.txt", REMOTE_FILE, 2 },
	{ "\xc3\xbcn\xc3\xaf.txt", REMOTE_FILE, 2 },
};
#define NR_TREE    (sizeof(tree) / sizeof(tree[0]))
#define TREE_MTIME 1706004000 /* 2024-01-23 10:00:00 UTC */

static char *slurp(const char *name, size_t *len)
{
	char path[4096];
	const char *dir = getenv("FERRY_TEST_DATA");
	FILE *f;
	char *buf;
	long n;

	if (!dir) {
		/* __FILE__ is the source path the build gave the compiler */
		snprintf(path, sizeof(path), "%s", __FILE__);
		*strrchr(path, '/') = '\0';
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "/data/%s", name);
	} else {
		snprintf(path, sizeof(path), "%s/%s", dir, name);
	}
	f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void check_page(const char *file, bool sizes_all_exact, bool has_columns)
{
	struct seen s = { 0 };
	size_t len;
	char *html = slurp(file, &len);

	cr_assert_eq(autoindex_parse(html, len, collect, &s), 0);
	cr_assert_eq(s.nr, (int)NR_TREE, "%s: %d entries, expected %zu", file, s.nr, NR_TREE);
	for (size_t i = 0; i < NR_TREE; i++) {
		int k = find(&s, tree[i].name);

		cr_assert_geq(k, 0, "%s: '%s' not found", file, tree[i].name);
		cr_expect_eq(s.type[k], tree[i].type, "%s: type of '%s'", file, tree[i].name);
		if (!has_columns) {
			cr_expect_not(s.exact[k]);
			continue;
		}
		cr_expect_eq(s.mtime[k], TREE_MTIME, "%s: mtime of '%s'", file, tree[i].name);
		if (tree[i].type == REMOTE_DIR) {
			cr_expect_not(s.exact[k]);
		} else if (sizes_all_exact || tree[i].size < 1000) {
			cr_expect(s.exact[k], "%s: size of '%s' should be exact", file,
				tree[i].name);
			cr_expect_eq(s.size[k], tree[i].size, "%s: size of '%s'", file,
				tree[i].name);
		} else {
			cr_expect_not(s.exact[k], "%s: '%s' has a rounded size", file,
				tree[i].name);
		}
	}
	seen_done(&s);
	free(html);
}

Test(autoindex, reads_every_entry_of_an_nginx_page_with_exact_sizes)
{
	check_page("autoindex_nginx.html", true, true);
}

Test(autoindex, reads_an_apache_fancyindexing_table_and_keeps_rounded_sizes_inexact)
{
	check_page("autoindex_apache_fancy.html", false, true);
}

Test(autoindex, reads_an_apache_fancyindexing_pre_page)
{
	check_page("autoindex_apache_pre.html", false, true);
}

Test(autoindex, reads_a_plain_apache_list)
{
	check_page("autoindex_apache_plain.html", false, false);
}

Test(autoindex, skips_parent_sort_absolute_and_offsite_links)
{
	const char *html = "<pre><a href=\"../\">../</a>\n<a href=\"?C=N;O=D\">Name</a>\n"
			   "<a href=\"/\">Parent</a>\n<a href=\"http://evil.example/x\">x</a>\n"
			   "<a href=\"#top\">top</a>\n<a href=\"..\">..</a>\n"
			   "<a href=\"mailto:a@b\">m</a>\n<a href=\"ok\">ok</a>\n</pre>";
	struct seen s = { 0 };

	cr_assert_eq(autoindex_parse(html, strlen(html), collect, &s), 0);
	cr_assert_eq(s.nr, 1);
	cr_assert_str_eq(s.name[0], "ok");
	seen_done(&s);
}

Test(autoindex, skips_unsafe_names_and_keeps_the_rest)
{
	char html[2048], longname[301];
	struct seen s = { 0 };

	memset(longname, 'a', 300);
	longname[300] = '\0';
	snprintf(html, sizeof(html),
		"<a href=\"%%2E%%2E/\">x</a>\n<a href=\"a%%2Fb\">x</a>\n<a href=\"%%00x\">x</a>\n"
		"<a href=\"%s\">x</a>\n<a href=\"sub/deeper\">x</a>\n<a href=\"bad%%zz\">x</a>\n"
		"<a href=\".\">x</a>\n<a href=\"good%%20one\">good one</a>\n",
		longname);
	cr_assert_eq(autoindex_parse(html, strlen(html), collect, &s), 0);
	cr_assert_eq(s.nr, 1, "only the safe name survives, got %d", s.nr);
	cr_assert_str_eq(s.name[0], "good one");
	seen_done(&s);
}

Test(autoindex, accepts_a_name_of_exactly_255_bytes)
{
	char html[600], name[256];
	struct seen s = { 0 };

	memset(name, 'b', 255);
	name[255] = '\0';
	snprintf(html, sizeof(html), "<a href='%s'>x</a>", name);
	cr_assert_eq(autoindex_parse(html, strlen(html), collect, &s), 0);
	cr_assert_eq(s.nr, 1);
	cr_assert_eq(strlen(s.name[0]), 255);
	seen_done(&s);
}

Test(autoindex, survives_truncated_and_garbage_pages)
{
	const char *pages[] = { "", "<a", "<a href", "<a href=\"x", "<a href=\"x\"", "<<<>>>&&&;;",
		"<a href=x>x</a> 99-Foo-2024 99:99 12", "<A HREF=\"y\">y</A>" };
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		struct seen s = { 0 };

		cr_assert_eq(autoindex_parse(pages[i], strlen(pages[i]), collect, &s), 0);
		seen_done(&s);
	}
}

static int stop_at_first(void *arg, const struct autoindex_entry *e)
{
	++*(int *)arg;
	return 7;
}

Test(autoindex, stops_when_the_callback_says_so)
{
	const char *html = "<a href=\"a\">a</a>\n<a href=\"b\">b</a>\n";
	int n = 0;

	cr_assert_eq(autoindex_parse(html, strlen(html), stop_at_first, &n), 7);
	cr_assert_eq(n, 1);
}
