/* Fuzz target for the listings a mount keeps in its state directory for offline remounts
 * (fs/namespace.c), through the public API only: at start an online namespace over a fake
 * remote lists the root once, which shows which file in the state directory holds the root's
 * kept listing; each input is then written there and an offline namespace is opened over it
 * and walked. Whatever the file holds, namespace_new succeeds or fails with -errno, and what
 * it serves is a sorted listing of safe, unique names whose stat, readlink and lookups agree.
 * Input: the kept listing file. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/log.h"
#include "fs/namespace.h"
#include "fs/remote/url.h"
#include "tests/fuzz/fuzz_util.h"

static char base[64], state_dir[96], listing_path[400];

static int fake_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	memset(out, 0, sizeof(*out));
	out->name = strdup("");
	out->type = REMOTE_DIR;
	return out->name ? 0 : -ENOMEM;
}

static int fake_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	struct remote_entry e = { .name = (char *)"x", .type = REMOTE_FILE, .size = 1 };

	return cb(arg, &e);
}

static const struct remote_ops fake_ops = { .name = "fake", .list = fake_list, .stat = fake_stat };
static struct remote fake_remote = { .ops = &fake_ops };

static void rm_state(void)
{
	DIR *d = opendir(state_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char p[400];

		if (e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, "..")))
			continue;
		snprintf(p, sizeof(p), "%s/%s", state_dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(state_dir);
	rmdir(base);
}

/* Lists the root once online and finds the one file that appeared: the root's listing. */
static void setup_once(void)
{
	struct namespace_config cfg = { .remote = &fake_remote,
		.source = "fake://x/",
		.ttl_s = -1,
		.uid = getuid(),
		.gid = getgid() };
	struct namespace *ns;
	struct ns_dir *dir;
	struct dirent *e;
	int nr = 0;
	DIR *d;

	if (base[0])
		return;
	if (!getenv("FERRY_FUZZ_VERBOSE"))
		log_set_level(LOG_LEVEL_ERROR);
	/* tmpfs where there is one: each input rewrites a file there. */
	snprintf(base, sizeof(base), "%s/ferry_fuzz_listing.XXXXXX",
		access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fuzz_check(mkdtemp(base) != NULL, "a temp dir");
	snprintf(state_dir, sizeof(state_dir), "%s/state", base);
	atexit(rm_state);
	cfg.state_dir = state_dir;
	fuzz_check(namespace_new(&ns, &cfg) == 0, "an online namespace opens");
	fuzz_check(namespace_dir_open(ns, NS_ROOT_INO, &dir) == 0, "the root lists");
	fuzz_check(dir->nr_entries == 1, "the fake remote's one entry is listed");
	namespace_dir_free(ns, dir);
	namespace_free(ns);
	d = opendir(state_dir);
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(listing_path, sizeof(listing_path), "%s/%s", state_dir, e->d_name);
		nr++;
	}
	if (d)
		closedir(d);
	if (nr != 1)
		fprintf(stderr, "%d files in %s after listing the root\n", nr, state_dir);
	fuzz_check(nr == 1, "listing the root kept exactly one file");
}

static void walk(struct namespace *ns)
{
	struct ns_dir *dir;
	struct ns_file *files;
	struct stat st;
	size_t nr_files;
	int ret;

	ret = namespace_dir_open(ns, NS_ROOT_INO, &dir);
	fuzz_check(ret == 0, "the root of a namespace that opened lists");
	files = calloc(dir->nr_entries + 1, sizeof(*files));
	fuzz_check(files != NULL, "memory");
	for (size_t i = 0; i < dir->nr_entries; i++) {
		struct ns_node *n = dir->entries[i].node;
		const char *name = dir->entries[i].name;
		enum remote_type type = namespace_type(n);

		fuzz_check(url_name_is_safe(name, strlen(name)), "only safe names are served");
		fuzz_check(strlen(name) <= 255 && !strchr(name, '/'), "one component");
		if (i)
			fuzz_check(strcmp(dir->entries[i - 1].name, name) < 0,
				"names are sorted and unique");
		namespace_stat(ns, n, &st);
		fuzz_check(st.st_ino == namespace_ino(n), "stat gives the node's ino");
		fuzz_check(type == REMOTE_FILE  ? S_ISREG(st.st_mode)
			   : type == REMOTE_DIR ? S_ISDIR(st.st_mode)
						: S_ISLNK(st.st_mode),
			"stat's mode matches the type");
		if (type == REMOTE_SYMLINK) {
			char *target = NULL;

			fuzz_check(namespace_readlink(ns, n, &target) == 0 && target,
				"a symlink reads");
			free(target);
		} else if (type == REMOTE_FILE) {
			struct ns_object obj;

			ret = namespace_peek_object(ns, n, &obj);
			fuzz_check(ret == 0 || ret < 0, "peek returns 0 or -errno");
			if (!ret) {
				fuzz_check(obj.obj.size == (uint64_t)st.st_size, "sizes agree");
				fuzz_check(obj.version != NULL, "an object has a version");
				namespace_object_done(&obj);
			}
		} else {
			struct ns_dir *sub;

			fuzz_check(namespace_dir_open(ns, namespace_ino(n), &sub) == 0,
				"a directory opens offline (empty when never listed)");
			namespace_dir_free(ns, sub);
		}
		ret = namespace_lookup(ns, NS_ROOT_INO, name, &st);
		fuzz_check(ret == 0 && st.st_ino == namespace_ino(n), "a listed name looks up");
		namespace_forget(ns, st.st_ino, 1);
	}
	nr_files = namespace_files_from(ns, NS_ROOT_INO, 0, dir->nr_entries, files);
	fuzz_check(nr_files <= dir->nr_entries, "no more files than entries");
	for (size_t i = 0; i < nr_files; i++) {
		fuzz_check(files[i].index < dir->nr_entries, "a file's index is in the listing");
		fuzz_check(dir->entries[files[i].index].node &&
				   namespace_ino(dir->entries[files[i].index].node) == files[i].ino,
			"a file's index names it");
	}
	fuzz_check(namespace_lookup(ns, NS_ROOT_INO, "..", &st) < 0, "'..' never looks up");
	free(files);
	namespace_dir_free(ns, dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct namespace_config cfg = { .remote = NULL,
		.source = "fake://x/",
		.ttl_s = -1,
		.uid = getuid(),
		.gid = getgid() };
	struct namespace *ns = NULL;
	int fd, ret;

	setup_once();
	cfg.state_dir = state_dir;
	fd = open(listing_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fuzz_check(fd >= 0, "the kept listing opens");
	fuzz_check(size == 0 || write(fd, data, size) == (ssize_t)size, "it is written");
	close(fd);
	ret = namespace_new(&ns, &cfg);
	fuzz_check(ret <= 0, "namespace_new: 0 or -errno");
	if (ret == 0) {
		walk(ns);
		namespace_free(ns);
	}
	return 0;
}
