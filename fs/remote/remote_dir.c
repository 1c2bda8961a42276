/* The local-directory backend: a directory tree (local disk, NFS, Lustre) served as a remote
 * store, so its files can be cached onto local NVMe. The namespace lists and stats through it;
 * the fetch engine reads chunks with ->read (pread). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "fs/remote/remote.h"

/* Immutable after open; safe to use from any thread. */
struct remote_dir {
	struct remote base;
	char *root;  /* canonical absolute path of the tree */
	int root_fd; /* O_PATH descriptor of root: every access is relative to it */
};

static struct remote_dir *to_dir(struct remote *r)
{
	return (struct remote_dir *)r;
}

/* Opens path below the root without following any symlink and without leaving the tree: the
 * namespace shows symlinks as symlinks, so a path it hands us never needs to traverse one.
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) enforces it; kernels without openat2 get a
 * plain openat with O_NOFOLLOW on the last component. */
static int dir_openat(struct remote_dir *d, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)flags | O_CLOEXEC | O_NOFOLLOW,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	const char *p = *path ? path : ".";
	long fd;

	fd = syscall(SYS_openat2, d->root_fd, p, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)
		fd = openat(d->root_fd, p, flags | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ELOOP ? -ENOENT : -errno;
	return (int)fd;
}

/* Fills e from st; 1 when the type is one we serve, 0 for devices, fifos and sockets. */
static int entry_from_stat(struct remote_entry *e, const struct stat *st)
{
	if (S_ISREG(st->st_mode))
		e->type = REMOTE_FILE;
	else if (S_ISDIR(st->st_mode))
		e->type = REMOTE_DIR;
	else if (S_ISLNK(st->st_mode))
		e->type = REMOTE_SYMLINK;
	else
		return 0;
	e->size = e->type == REMOTE_DIR ? 0 : (uint64_t)st->st_size;
	e->mtime = st->st_mtim;
	e->etag = NULL; /* the version of a local file is its (mtime, size) */
	return 1;
}

static int read_link(int dirfd, const char *name, char **out)
{
	char buf[PATH_MAX];
	ssize_t n = readlinkat(dirfd, name, buf, sizeof(buf) - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	*out = strdup(buf);
	return *out ? 0 : -ENOMEM;
}

static int dir_open(struct remote **out, const char *source, const struct remote_options *opt,
	char *errbuf, size_t errlen)
{
	struct remote_dir *d;
	struct stat st;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->base.ops = &remote_dir_ops;
	d->root_fd = -1;
	d->root = realpath(source, NULL);
	if (!d->root) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot open source directory %s: %s", source,
			strerror(errno));
		goto err;
	}
	d->root_fd = open(d->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (d->root_fd < 0 || fstat(d->root_fd, &st) < 0) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot open source directory %s: %s", source,
			strerror(errno));
		goto err;
	}
	*out = &d->base;
	return 0;
err:
	if (d->root_fd >= 0)
		close(d->root_fd);
	free(d->root);
	free(d);
	return ret;
}

static void dir_free(struct remote *r)
{
	struct remote_dir *d;

	if (!r)
		return;
	d = to_dir(r);
	close(d->root_fd);
	free(d->root);
	free(d);
}

static int dir_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	struct remote_dir *d = to_dir(r);
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = dir_openat(d, path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return fd;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((errno = 0, de = readdir(dir))) {
		struct remote_entry e = { 0 };
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* Raced with a removal: the entry is simply not listed. */
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!entry_from_stat(&e, &st))
			continue;
		e.name = strdup(de->d_name);
		if (!e.name) {
			ret = -ENOMEM;
			break;
		}
		if (e.type == REMOTE_SYMLINK && read_link(fd, de->d_name, &e.link_target) < 0) {
			remote_entry_done(&e);
			continue;
		}
		ret = cb(arg, &e);
		remote_entry_done(&e);
		if (ret)
			break;
	}
	if (!ret && errno)
		ret = -errno;
	closedir(dir);
	return ret;
}

static int dir_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	struct remote_dir *d = to_dir(r);
	const char *slash = strrchr(path, '/');
	struct stat st;
	int dfd, ret;

	memset(out, 0, sizeof(*out));
	/* Stat the last component without following it, from its parent opened safely. */
	if (slash) {
		char *parent = strndup(path, (size_t)(slash - path));

		if (!parent)
			return -ENOMEM;
		dfd = dir_openat(d, parent, O_PATH | O_DIRECTORY);
		free(parent);
	} else {
		dfd = dir_openat(d, "", O_PATH | O_DIRECTORY);
	}
	if (dfd < 0)
		return dfd == -ENOTDIR ? -ENOENT : dfd;
	const char *name = slash ? slash + 1 : (*path ? path : ".");

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		ret = -errno;
		goto out;
	}
	if (!entry_from_stat(out, &st)) {
		ret = -ENOENT;
		goto out;
	}
	out->name = strdup(*path ? name : "");
	ret = out->name ? 0 : -ENOMEM;
	if (!ret && out->type == REMOTE_SYMLINK)
		ret = read_link(dfd, name, &out->link_target);
	if (ret)
		remote_entry_done(out);
out:
	close(dfd);
	return ret;
}

/* Reads exactly len bytes of the version obj names; a file whose size or mtime moved is
 * another version, so its bytes must not be mixed into this one's chunks: -ESTALE. */
static ssize_t dir_read(struct remote *r, const struct remote_object *obj, void *buf, uint64_t len,
	uint64_t off)
{
	struct remote_dir *d = to_dir(r);
	struct stat st;
	uint64_t done = 0;
	ssize_t ret;
	int fd;

	fd = dir_openat(d, obj->path, O_RDONLY);
	if (fd < 0)
		return fd == -ENOENT ? -ESTALE : fd;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != obj->size ||
		st.st_mtim.tv_sec != obj->mtime.tv_sec ||
		st.st_mtim.tv_nsec != obj->mtime.tv_nsec) {
		ret = -ESTALE;
		goto out;
	}
	if (off > obj->size || len > obj->size - off) {
		ret = -EINVAL;
		goto out;
	}
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0) { /* truncated under us */
			ret = -ESTALE;
			goto out;
		}
		done += (uint64_t)n;
	}
	/* A change while we read would leave mixed bytes: check the version again. */
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != obj->size ||
		st.st_mtim.tv_sec != obj->mtime.tv_sec ||
		st.st_mtim.tv_nsec != obj->mtime.tv_nsec) {
		ret = -ESTALE;
		goto out;
	}
	ret = (ssize_t)len;
out:
	close(fd);
	return ret;
}

const struct remote_ops remote_dir_ops = {
	.name = "dir",
	.open = dir_open,
	.free = dir_free,
	.list = dir_list,
	.stat = dir_stat,
	.http = NULL,
	.read = dir_read,
};
