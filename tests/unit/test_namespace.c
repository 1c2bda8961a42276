/* Unit tests of fs/namespace.c over the local-directory backend (fs/remote/remote_dir.c) on a real
 * temporary tree: listings, lookups, ttl, kept listings for offline mounts, versions. The
 * oracle is the tree itself (stat(2) of the files the test made). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/namespace.h"
#include "fs/remote/remote.h"

static char tree[] = "/tmp/ferry-ns-tree-XXXXXX";
static char state[] = "/tmp/ferry-ns-state-XXXXXX";

static void write_file(const char *rel, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", tree, rel);
	f = fopen(p, "w");
	cr_assert(f);
	fputs(text, f);
	fclose(f);
}

static void setup(void)
{
	char p[512];

	cr_assert(mkdtemp(tree));
	cr_assert(mkdtemp(state));
	write_file("a.txt", "hello");
	write_file("b c.bin", "0123456789");
	snprintf(p, sizeof(p), "%s/sub", tree);
	mkdir(p, 0755);
	write_file("sub/inner", "x");
	snprintf(p, sizeof(p), "%s/ln", tree);
	cr_assert_eq(symlink("sub/inner", p), 0);
}

static void teardown(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", tree, state);
	cr_expect_eq(system(cmd), 0);
}

static struct remote *open_remote(void)
{
	struct remote *r = NULL;
	char err[256];

	cr_assert_eq(remote_dir_ops.open(&r, tree, &(struct remote_options){ 0 }, err, sizeof(err)),
		0, "%s", err);
	return r;
}

static struct namespace *open_ns(struct remote *r, double ttl)
{
	struct namespace_config cfg = {
		.remote = r,
		.source = tree,
		.state_dir = state,
		.ttl_s = ttl,
		.uid = getuid(),
		.gid = getgid(),
	};
	struct namespace *ns = NULL;

	cr_assert_eq(namespace_new(&ns, &cfg), 0);
	return ns;
}

static int count_entries(struct namespace *ns, uint64_t ino, const char *want)
{
	struct ns_dir *d;
	int found = 0;

	cr_assert_eq(namespace_dir_open(ns, ino, &d), 0);
	for (size_t i = 0; i < d->nr_entries; i++)
		if (want && !strcmp(d->entries[i].name, want))
			found = 1;
	found = want ? found : (int)d->nr_entries;
	namespace_dir_free(ns, d);
	return found;
}

TestSuite(namespace, .init = setup, .fini = teardown);

Test(namespace, lists_the_root_with_types_and_sizes_of_the_tree)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 3600);
	struct stat st, want;
	char p[512];

	cr_expect_eq(count_entries(ns, NS_ROOT_INO, NULL), 4);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "b c.bin", &st), 0);
	snprintf(p, sizeof(p), "%s/b c.bin", tree);
	stat(p, &want);
	cr_expect(S_ISREG(st.st_mode));
	cr_expect_eq(st.st_size, want.st_size);
	cr_expect_eq(st.st_mtim.tv_sec, want.st_mtim.tv_sec);
	cr_expect_eq(st.st_mtim.tv_nsec, want.st_mtim.tv_nsec);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &st), 0);
	cr_expect(S_ISDIR(st.st_mode));
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "ln", &st), 0);
	cr_expect(S_ISLNK(st.st_mode));
	cr_expect_eq(st.st_size, (off_t)strlen("sub/inner"));
	namespace_free(ns);
	remote_dir_ops.free(r);
}

Test(namespace, looks_up_through_subdirectories_and_reads_symlinks)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 3600);
	struct stat sub, inner, ln;
	struct ns_node *n;
	char *target = NULL;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_assert_eq(namespace_lookup(ns, sub.st_ino, "inner", &inner), 0);
	cr_expect_eq(inner.st_size, 1);
	cr_expect_eq(namespace_lookup(ns, sub.st_ino, "missing", &inner), -ENOENT);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "ln", &ln), 0);
	n = namespace_get(ns, ln.st_ino);
	cr_assert(n);
	cr_assert_eq(namespace_readlink(ns, n, &target), 0);
	cr_expect_str_eq(target, "sub/inner");
	free(target);
	namespace_put(ns, n);
	namespace_free(ns);
	remote_dir_ops.free(r);
}

Test(namespace, refuses_lookups_of_unsafe_names)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 0);
	const char *bad[] = { "", ".", "..", "sub/inner", "../a.txt" };
	char long_name[300];
	struct stat st;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(namespace_lookup(ns, NS_ROOT_INO, bad[i], &st), -ENOENT, "'%s'",
			bad[i]);
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	cr_expect_eq(namespace_lookup(ns, NS_ROOT_INO, long_name, &st), -ENOENT);
	cr_expect_eq(namespace_lookup(ns, NS_ROOT_INO, "a.txt", &st), 0, "the safe name is there");
	namespace_forget(ns, st.st_ino, 1);
	namespace_free(ns);
	remote_dir_ops.free(r);
}

Test(namespace, keeps_inode_numbers_across_a_relist)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 0);
	struct stat a1, a2;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "a.txt", &a1), 0);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "a.txt", &a2), 0);
	cr_expect_eq(a1.st_ino, a2.st_ino);
	namespace_free(ns);
	remote_dir_ops.free(r);
}

Test(namespace, sees_a_new_file_only_after_the_ttl)
{
	struct remote *r = open_remote();
	struct namespace *ns_never = open_ns(r, -1);
	struct namespace *ns_zero;

	cr_expect_eq(count_entries(ns_never, NS_ROOT_INO, "new"), 0);
	write_file("new", "n");
	cr_expect_eq(count_entries(ns_never, NS_ROOT_INO, "new"), 0);
	namespace_free(ns_never);
	ns_zero = open_ns(r, 0);
	cr_expect_eq(count_entries(ns_zero, NS_ROOT_INO, "new"), 1);
	namespace_free(ns_zero);
	remote_dir_ops.free(r);
}

Test(namespace, lists_offline_what_an_online_mount_listed)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 3600);
	struct stat st, sub;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_assert_eq(namespace_lookup(ns, sub.st_ino, "inner", &st), 0);
	namespace_free(ns);
	remote_dir_ops.free(r);

	ns = open_ns(NULL, 3600);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, NULL), 4);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "b c.bin", &st), 0);
	cr_expect_eq(st.st_size, 10);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_expect_eq(namespace_lookup(ns, sub.st_ino, "inner", &st), 0);
	namespace_free(ns);
}

Test(namespace, refuses_an_offline_start_with_nothing_kept)
{
	struct namespace_config cfg = { .state_dir = state, .ttl_s = 1, .source = tree };
	struct namespace *ns = NULL;

	cr_expect_eq(namespace_new(&ns, &cfg), -ENOENT);
	cr_expect_null(ns);
}

Test(namespace, names_a_file_version_by_its_mtime_when_there_is_no_etag)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 3600);
	struct ns_object o1, o2;
	struct stat st, want;
	struct ns_node *n;
	char p[512], v[64];

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "a.txt", &st), 0);
	n = namespace_get(ns, st.st_ino);
	cr_assert_eq(namespace_open_object(ns, n, &o1), 0);
	snprintf(p, sizeof(p), "%s/a.txt", tree);
	stat(p, &want);
	snprintf(v, sizeof(v), "%lld.%09ld", (long long)want.st_mtim.tv_sec, want.st_mtim.tv_nsec);
	cr_expect_str_eq(o1.version, v);
	cr_expect_str_eq(o1.obj.path, "a.txt");
	cr_expect_eq(o1.obj.size, 5);
	cr_expect(!o1.keep_cache, "the first open has nothing to keep");
	cr_assert_eq(namespace_open_object(ns, n, &o2), 0);
	cr_expect(o2.keep_cache, "an unchanged version keeps the page cache");
	namespace_object_done(&o1);
	namespace_object_done(&o2);
	namespace_put(ns, n);
	namespace_free(ns);
	remote_dir_ops.free(r);
}

Test(namespace, forgets_a_node_dropped_from_its_listing_after_the_last_forget)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 0);
	struct ns_node *n;
	struct stat st;
	char p[512];

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "a.txt", &st), 0);
	snprintf(p, sizeof(p), "%s/a.txt", tree);
	unlink(p);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "a.txt"), 0);
	n = namespace_get(ns, st.st_ino);
	cr_expect_not_null(n, "the kernel still holds a lookup");
	namespace_put(ns, n);
	namespace_forget(ns, st.st_ino, 1);
	cr_expect_null(namespace_get(ns, st.st_ino));
	namespace_free(ns);
	remote_dir_ops.free(r);
}

/* More entries than two pages of the inode table (4,680 each) come and go: the inode numbers of
 * the gone ones are never handed out again, and every number still listed finds its node. */
Test(namespace, never_reuses_the_inode_numbers_of_a_page_of_gone_entries)
{
	enum { NR = 10000 };
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 0);
	struct ns_dir *d;
	uint64_t first, last;
	struct stat st;
	char p[512];

	snprintf(p, sizeof(p), "%s/many", tree);
	cr_assert_eq(mkdir(p, 0755), 0);
	for (int i = 0; i < NR; i++) {
		snprintf(p, sizeof(p), "%s/many/%06d", tree, i);
		close(open(p, O_WRONLY | O_CREAT, 0644));
	}
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "many", &st), 0);
	cr_assert_eq(namespace_dir_open(ns, st.st_ino, &d), 0);
	cr_assert_eq(d->nr_entries, NR);
	first = namespace_ino(d->entries[0].node);
	last = namespace_ino(d->entries[NR - 1].node);
	namespace_dir_free(ns, d);
	for (int i = 0; i < NR - 1; i++) {
		snprintf(p, sizeof(p), "%s/many/%06d", tree, i);
		unlink(p);
	}
	cr_assert_eq(namespace_dir_open(ns, st.st_ino, &d), 0);
	cr_assert_eq(d->nr_entries, 1);
	cr_expect_eq(namespace_ino(d->entries[0].node), last, "the one left keeps its number");
	namespace_dir_free(ns, d);
	cr_expect_null(namespace_get(ns, first));
	cr_expect_null(namespace_get(ns, first + 6000), "a page of gone entries");
	cr_expect_lt(namespace_nr_nodes(ns), 10);
	snprintf(p, sizeof(p), "%s/many/new", tree);
	close(open(p, O_WRONLY | O_CREAT, 0644));
	cr_assert_eq(namespace_lookup(ns, st.st_ino, "new", &st), 0);
	cr_expect_gt(st.st_ino, last, "a new entry gets a new number");
	namespace_forget(ns, st.st_ino, 1);
	namespace_free(ns);
	remote_dir_ops.free(r);
}

/* A relist that keeps some nodes and adds others between them: the listing is no longer one
 * run of inode numbers (a first listing is), and must still list in name order, look each name
 * up to its own node and tell each node's position. Names past the node's inline room too. */
Test(namespace, relists_kept_and_new_names_in_order)
{
	static const char *const names[] = { "a", "b-a-name-longer-than-the-node-holds", "c", "d",
		"e" };
	struct remote *r = open_remote();
	struct namespace *ns;
	uint64_t kept[5] = { 0 }, pos_dir;
	struct stat dir, st;
	struct ns_dir *d;
	char p[512];
	size_t idx;

	snprintf(p, sizeof(p), "%s/mix", tree);
	cr_assert_eq(mkdir(p, 0755), 0);
	write_file("mix/a", "1");
	write_file("mix/c", "333");
	write_file("mix/e", "55555");
	ns = open_ns(r, 0);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "mix", &dir), 0);
	for (int i = 0; i < 5; i += 2) {
		cr_assert_eq(namespace_lookup(ns, dir.st_ino, names[i], &st), 0);
		kept[i] = st.st_ino;
	}
	write_file("mix/b-a-name-longer-than-the-node-holds", "22");
	write_file("mix/d", "4444");
	cr_assert_eq(namespace_dir_open(ns, dir.st_ino, &d), 0);
	cr_assert_eq(d->nr_entries, 5);
	for (size_t i = 0; i < 5; i++) {
		struct ns_node *n = d->entries[i].node;

		cr_expect_str_eq(d->entries[i].name, names[i]);
		if (kept[i])
			cr_expect_eq(namespace_ino(n), kept[i], "%s keeps its inode", names[i]);
		cr_assert_eq(namespace_position(ns, n, &pos_dir, &idx), 0);
		cr_expect_eq(pos_dir, dir.st_ino);
		cr_expect_eq(idx, i);
	}
	namespace_dir_free(ns, d);
	for (size_t i = 0; i < 5; i++) {
		char *path, want[64];
		struct ns_node *n;

		cr_assert_eq(namespace_lookup(ns, dir.st_ino, names[i], &st), 0, "%s", names[i]);
		cr_expect_eq(st.st_size, i + 1, "%s", names[i]);
		snprintf(want, sizeof(want), "mix/%s", names[i]);
		n = namespace_get(ns, st.st_ino);
		path = namespace_path(ns, n);
		cr_expect_str_eq(path, want);
		free(path);
		namespace_put(ns, n);
	}
	namespace_free(ns);
	remote_dir_ops.free(r);
}

/* Only directories keep their path, so a directory dropped from its listing stays while a node
 * of it lives: the kernel still holds sub/inner after sub is gone and forgotten. */
Test(namespace, a_file_outlives_its_dropped_directory_with_its_path)
{
	struct remote *r = open_remote();
	struct namespace *ns = open_ns(r, 0);
	struct stat sub, inner;
	struct ns_node *n;
	char p[512], *path;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_assert_eq(namespace_lookup(ns, sub.st_ino, "inner", &inner), 0);
	snprintf(p, sizeof(p), "rm -rf '%s/sub'", tree);
	cr_assert_eq(system(p), 0);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "sub"), 0);
	namespace_forget(ns, sub.st_ino, 1);
	n = namespace_get(ns, inner.st_ino);
	cr_assert_not_null(n, "the kernel still holds a lookup");
	path = namespace_path(ns, n);
	cr_expect_str_eq(path, "sub/inner");
	free(path);
	namespace_put(ns, n);
	namespace_forget(ns, inner.st_ino, 1);
	cr_expect_null(namespace_get(ns, inner.st_ino));
	cr_expect_null(namespace_get(ns, sub.st_ino), "the directory goes with its last node");
	namespace_free(ns);
	remote_dir_ops.free(r);
}

/* ---- symlink policy ---- */

Test(namespace, tells_symlink_targets_that_stay_inside_from_those_that_leave)
{
	cr_expect(namespace_link_stays_inside("", "a.txt"));
	cr_expect(namespace_link_stays_inside("", "./sub/inner"));
	cr_expect(namespace_link_stays_inside("sub", "../a.txt"));
	cr_expect(namespace_link_stays_inside("a/b", "../../c"));
	cr_expect(namespace_link_stays_inside("a/b", "..//..//c/./d"));
	cr_expect(!namespace_link_stays_inside("", "/etc/shadow"));
	cr_expect(!namespace_link_stays_inside("sub", "/sub/inner"));
	cr_expect(!namespace_link_stays_inside("", "../x"));
	cr_expect(!namespace_link_stays_inside("a/b", "../../../x"));
	cr_expect(!namespace_link_stays_inside("", ".."));
	/* "sub" may itself be a symlink elsewhere: a ".." after a name is not resolved here */
	cr_expect(!namespace_link_stays_inside("", "sub/../a.txt"));
	cr_expect(!namespace_link_stays_inside("", ""));
}

/* Counts the lines of what the test's stderr received that contain needle. */
static int count_log_lines(const char *path, const char *needle)
{
	char line[1024];
	int nr = 0;
	FILE *f;

	fflush(stderr);
	f = fopen(path, "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			nr++;
	fclose(f);
	return nr;
}

static void make_outside_links(void)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/abs", tree);
	cr_assert_eq(symlink("/etc/passwd", p), 0);
	snprintf(p, sizeof(p), "%s/up", tree);
	cr_assert_eq(symlink("../outside", p), 0);
	snprintf(p, sizeof(p), "%s/sub/back", tree);
	cr_assert_eq(symlink("../a.txt", p), 0);
	snprintf(p, sizeof(p), "%s/sub/away", tree);
	cr_assert_eq(symlink("../../x", p), 0);
}

Test(namespace, hides_symlinks_that_leave_the_mount_with_one_warning)
{
	char logpath[] = "/tmp/ferry-ns-log-XXXXXX";
	int logfd = mkstemp(logpath);
	struct remote *r;
	struct namespace *ns;
	struct stat sub;

	cr_assert_geq(logfd, 0);
	cr_assert_geq(dup2(logfd, STDERR_FILENO), 0);
	make_outside_links();
	r = open_remote();
	ns = open_ns(r, 3600);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "abs"), 0);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "up"), 0);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "ln"), 1, "sub/inner stays inside");
	cr_expect_eq(namespace_lookup(ns, NS_ROOT_INO, "abs", &sub), -ENOENT);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_expect_eq(count_entries(ns, sub.st_ino, "back"), 1);
	cr_expect_eq(count_entries(ns, sub.st_ino, "away"), 0);
	cr_expect_eq(count_log_lines(logpath, "hiding symlink"), 1);
	namespace_free(ns);
	remote_dir_ops.free(r);
	unlink(logpath);
	close(logfd);
}

Test(namespace, shows_symlinks_that_leave_the_mount_when_the_option_allows_them)
{
	struct namespace_config cfg = {
		.source = tree,
		.state_dir = state,
		.ttl_s = 3600,
		.uid = getuid(),
		.gid = getgid(),
		.allow_outside_symlinks = true,
	};
	struct namespace *ns = NULL;
	struct ns_node *n;
	struct stat st;
	char *target = NULL;

	make_outside_links();
	cfg.remote = open_remote();
	cr_assert_eq(namespace_new(&ns, &cfg), 0);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "abs", &st), 0);
	n = namespace_get(ns, st.st_ino);
	cr_assert_eq(namespace_readlink(ns, n, &target), 0);
	cr_expect_str_eq(target, "/etc/passwd");
	free(target);
	namespace_put(ns, n);
	cr_expect_eq(count_entries(ns, NS_ROOT_INO, "up"), 1);
	namespace_free(ns);
	remote_dir_ops.free(cfg.remote);
}

/* ---- ETags that are no version ---- */

struct fake_remote {
	struct remote base;
	const char *etag; /* what the listing and the stat of "f" say */
};

static const struct remote_ops fake_ops;

static int fake_fill(struct fake_remote *f, const char *name, struct remote_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	e->type = *name ? REMOTE_FILE : REMOTE_DIR;
	e->size = *name ? 3 : 0;
	e->mtime.tv_sec = 1700000000;
	e->mtime.tv_nsec = 5;
	e->etag = *name && f->etag ? strdup(f->etag) : NULL;
	return e->name ? 0 : -ENOMEM;
}

static int fake_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	struct remote_entry e;
	int ret = fake_fill((struct fake_remote *)r, "f", &e);

	if (!ret)
		ret = cb(arg, &e);
	remote_entry_done(&e);
	return ret;
}

static int fake_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	return fake_fill((struct fake_remote *)r, *path ? "f" : "", out);
}

static const struct remote_ops fake_ops = {
	.name = "fake",
	.list = fake_list,
	.stat = fake_stat,
};

static void expect_mtime_version_for_etag(const char *etag)
{
	struct fake_remote fr = { .base.ops = &fake_ops, .etag = etag };
	struct namespace *ns = open_ns(&fr.base, 3600);
	struct ns_object o;
	struct ns_node *n;
	struct stat st;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "f", &st), 0);
	n = namespace_get(ns, st.st_ino);
	cr_assert_eq(namespace_open_object(ns, n, &o), 0);
	cr_expect_null(o.obj.etag, "ETag '%s' must not be pinned", etag);
	cr_expect_str_eq(o.version, "1700000000.000000005");
	cr_expect_null(namespace_etag(ns, n));
	namespace_object_done(&o);
	namespace_put(ns, n);
	namespace_free(ns);
}

Test(namespace, takes_an_etag_of_star_as_no_version)
{
	expect_mtime_version_for_etag("*");
	expect_mtime_version_for_etag("\"*\"");
}

Test(namespace, takes_an_empty_etag_as_no_version)
{
	expect_mtime_version_for_etag("");
	expect_mtime_version_for_etag("\"\"");
}

Test(namespace, pins_a_real_etag)
{
	struct fake_remote fr = { .base.ops = &fake_ops, .etag = "\"abc\"" };
	struct namespace *ns = open_ns(&fr.base, 3600);
	struct ns_object o;
	struct ns_node *n;
	struct stat st;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "f", &st), 0);
	n = namespace_get(ns, st.st_ino);
	cr_assert_eq(namespace_open_object(ns, n, &o), 0);
	cr_expect_str_eq(o.obj.etag, "\"abc\"");
	cr_expect_str_eq(o.version, "\"abc\"");
	namespace_object_done(&o);
	namespace_put(ns, n);
	namespace_free(ns);
}

/* ---- kept listings: private, atomic, trusted only when ours ---- */

/* The kept listing of directory dir_path under state_dir: named by XXH3_64 of the path, as
 * namespace.c names it. */
static void kept_file(const char *state_dir, const char *dir_path, char *out, size_t len)
{
	snprintf(out, len, "%s/%016llx.list", state_dir,
		(unsigned long long)XXH3_64bits(dir_path, strlen(dir_path)));
}

Test(namespace, keeps_listings_0600_in_a_0700_directory_under_umask_000)
{
	struct namespace_config cfg = {
		.source = tree,
		.ttl_s = 3600,
		.uid = getuid(),
		.gid = getgid(),
	};
	char dir[600], file[700];
	struct namespace *ns = NULL;
	struct stat st, sub;

	umask(0);
	snprintf(dir, sizeof(dir), "%s/listings", state);
	cfg.state_dir = dir;
	cfg.remote = open_remote();
	cr_assert_eq(namespace_new(&ns, &cfg), 0);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_assert_eq(count_entries(ns, sub.st_ino, NULL), 1);
	namespace_free(ns);
	remote_dir_ops.free(cfg.remote);
	cr_assert_eq(stat(dir, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0700, "listings dir is %o", st.st_mode & 07777);
	kept_file(dir, "", file, sizeof(file));
	cr_assert_eq(stat(file, &st), 0, "%s: %s", file, strerror(errno));
	cr_expect_eq(st.st_mode & 07777, 0600, "root listing is %o", st.st_mode & 07777);
	kept_file(dir, "sub", file, sizeof(file));
	cr_assert_eq(stat(file, &st), 0, "%s: %s", file, strerror(errno));
	cr_expect_eq(st.st_mode & 07777, 0600, "sub's listing is %o", st.st_mode & 07777);
}

Test(namespace, makes_an_existing_listings_directory_private_again)
{
	struct remote *r = open_remote();
	struct stat st;

	cr_assert_eq(chmod(state, 0777), 0);
	namespace_free(open_ns(r, 3600));
	remote_dir_ops.free(r);
	cr_assert_eq(stat(state, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0700, "state dir is %o", st.st_mode & 07777);
}

/* An online mount (outside symlinks allowed, so the kept listings hold one to /etc/shadow)
 * lists the root and sub, and keeps both listings. */
static void keep_listings_with_a_shadow_link(void)
{
	struct namespace_config cfg = {
		.source = tree,
		.state_dir = state,
		.ttl_s = 3600,
		.uid = getuid(),
		.gid = getgid(),
		.allow_outside_symlinks = true,
	};
	struct namespace *ns = NULL;
	struct stat sub;
	char p[512];

	snprintf(p, sizeof(p), "%s/shadow", tree);
	cr_assert_eq(symlink("/etc/shadow", p), 0);
	snprintf(p, sizeof(p), "%s/sub/shadow", tree);
	cr_assert_eq(symlink("/etc/shadow", p), 0);
	cfg.remote = open_remote();
	cr_assert_eq(namespace_new(&ns, &cfg), 0);
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_assert_eq(count_entries(ns, sub.st_ino, "shadow"), 1);
	namespace_free(ns);
	remote_dir_ops.free(cfg.remote);
}

/* The offline mount that follows, with the policy out of the way (outside symlinks allowed):
 * what it lists in sub. */
static struct namespace *open_offline_allowing_links(void)
{
	struct namespace_config cfg = {
		.source = tree,
		.state_dir = state,
		.ttl_s = 3600,
		.uid = getuid(),
		.gid = getgid(),
		.allow_outside_symlinks = true,
	};
	struct namespace *ns = NULL;

	cr_assert_eq(namespace_new(&ns, &cfg), 0);
	return ns;
}

static void expect_sub_listing_discarded(void)
{
	struct namespace *ns = open_offline_allowing_links();
	char file[700];
	struct stat sub;

	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_expect_eq(count_entries(ns, sub.st_ino, NULL), 0, "nothing of it is served");
	cr_expect_eq(namespace_lookup(ns, sub.st_ino, "shadow", &sub), -ENOENT);
	namespace_free(ns);
	kept_file(state, "sub", file, sizeof(file));
	cr_expect_neq(access(file, F_OK), 0, "the discarded listing is removed");
}

Test(namespace, serves_a_kept_listing_of_its_own_offline)
{
	struct namespace *ns;
	struct stat sub;

	keep_listings_with_a_shadow_link();
	ns = open_offline_allowing_links();
	cr_assert_eq(namespace_lookup(ns, NS_ROOT_INO, "sub", &sub), 0);
	cr_expect_eq(count_entries(ns, sub.st_ino, "shadow"), 1, "the control: ours is served");
	namespace_free(ns);
}

Test(namespace, never_serves_a_kept_listing_owned_by_another_user)
{
	char file[700];

	cr_assert_eq(geteuid(), 0, "chown to another uid needs root (tests run as root)");
	keep_listings_with_a_shadow_link();
	kept_file(state, "sub", file, sizeof(file));
	cr_assert_eq(chown(file, 65534, 65534), 0);
	expect_sub_listing_discarded();
}

Test(namespace, never_serves_a_kept_listing_others_may_write)
{
	char file[700];

	keep_listings_with_a_shadow_link();
	kept_file(state, "sub", file, sizeof(file));
	cr_assert_eq(chmod(file, 0666), 0);
	expect_sub_listing_discarded();
}

Test(namespace, never_serves_a_kept_listing_that_is_a_symlink)
{
	char file[700], moved[800];

	keep_listings_with_a_shadow_link();
	kept_file(state, "sub", file, sizeof(file));
	snprintf(moved, sizeof(moved), "%s/elsewhere", tree);
	cr_assert_eq(rename(file, moved), 0);
	cr_assert_eq(symlink(moved, file), 0);
	expect_sub_listing_discarded();
}

Test(namespace, never_serves_a_kept_listing_that_does_not_parse)
{
	char file[700];
	FILE *f;

	keep_listings_with_a_shadow_link();
	kept_file(state, "sub", file, sizeof(file));
	f = fopen(file, "a");
	cr_assert(f);
	fputs("this is not a manifest line\n", f);
	fclose(f);
	expect_sub_listing_discarded();
}

Test(namespace, refuses_an_offline_start_from_a_root_listing_of_another_user)
{
	struct namespace_config cfg = {
		.source = tree,
		.state_dir = state,
		.ttl_s = 3600,
		.uid = getuid(),
		.gid = getgid(),
		.allow_outside_symlinks = true,
	};
	struct namespace *ns = NULL;
	char file[700];

	cr_assert_eq(geteuid(), 0, "chown to another uid needs root (tests run as root)");
	keep_listings_with_a_shadow_link();
	kept_file(state, "", file, sizeof(file));
	cr_assert_eq(chown(file, 65534, 65534), 0);
	cr_expect_neq(namespace_new(&ns, &cfg), 0);
	cr_expect_null(ns);
	cr_expect_neq(access(file, F_OK), 0, "the planted listing is removed");
}
