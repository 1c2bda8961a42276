/* Unit tests of fs/namespace.c over the local-directory backend (fs/remote_dir.c) on a real
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

#include "fs/namespace.h"
#include "fs/remote.h"

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
		.remote = r, .source = tree, .state_dir = state, .ttl_s = ttl,
		.uid = getuid(), .gid = getgid(),
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

Test(namespace, refuses_unsafe_names)
{
	char long_name[300];

	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	cr_expect(!namespace_name_is_safe(""));
	cr_expect(!namespace_name_is_safe("."));
	cr_expect(!namespace_name_is_safe(".."));
	cr_expect(!namespace_name_is_safe("a/b"));
	cr_expect(!namespace_name_is_safe(long_name));
	long_name[255] = '\0';
	cr_expect(namespace_name_is_safe(long_name));
	cr_expect(namespace_name_is_safe("..."));
	cr_expect(namespace_name_is_safe("naïve file %41.txt"));
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
