/* The ferry manifest (format in manifest.h and docs/ferry.md): a strict line parser, since a
 * manifest comes from a server and may be hostile, and a writer that walks a local tree for
 * `ferry manifest DIR`. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/log.h"
#include "fs/manifest.h"
#include "fs/url.h"

#define MANIFEST_HEADER	  "ferry-manifest 1"
#define MANIFEST_MAX_PATH 4096

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* "SEC" or "SEC.FRAC" with 1..9 fraction digits; SEC may be negative. */
static int parse_mtime(const char *s, size_t n, struct timespec *ts)
{
	const char *dot = memchr(s, '.', n);
	size_t sl = dot ? (size_t)(dot - s) : n;
	bool neg = sl && s[0] == '-';
	uint64_t sec, frac = 0;
	size_t fl = 0, i;

	if (parse_u64(s + neg, sl - neg, &sec) || sec > INT64_MAX)
		return -EINVAL;
	if (dot) {
		fl = n - sl - 1;
		if (fl == 0 || fl > 9 || parse_u64(dot + 1, fl, &frac))
			return -EINVAL;
		for (i = fl; i < 9; i++)
			frac *= 10;
	}
	ts->tv_sec = neg ? -(time_t)sec : (time_t)sec;
	ts->tv_nsec = (long)frac;
	return 0;
}

static int parse_line(const char *line, size_t len, struct remote_entry *e, const char **why)
{
	const char *f[7];
	size_t fl[7], nr = 0, i = 0;
	char *s = NULL;

	for (;;) {
		size_t j = i;

		while (j < len && line[j] != ' ')
			j++;
		f[nr] = line + i;
		fl[nr++] = j - i;
		if (j == len || nr == 7)
			break;
		i = j + 1;
	}
	if (nr == 7) {
		*why = "too many fields";
		return -EINVAL;
	}
	for (i = 0; i < nr; i++) {
		if (fl[i] == 0) {
			*why = "empty field (fields are separated by one space)";
			return -EINVAL;
		}
	}
	if (nr < 5) {
		*why = "expected TYPE SIZE MTIME ETAG PATH";
		return -EINVAL;
	}
	if (fl[0] != 1 || !strchr("fdl", f[0][0])) {
		*why = "TYPE is not f, d or l";
		return -EINVAL;
	}
	e->type = f[0][0] == 'f' ? REMOTE_FILE : f[0][0] == 'd' ? REMOTE_DIR : REMOTE_SYMLINK;
	if ((e->type == REMOTE_SYMLINK) != (nr == 6)) {
		*why = e->type == REMOTE_SYMLINK ? "symlink without target" : "too many fields";
		return -EINVAL;
	}
	if (parse_u64(f[1], fl[1], &e->size)) {
		*why = "SIZE is not a decimal number";
		return -EINVAL;
	}
	if (e->type == REMOTE_DIR)
		e->size = 0;
	if (parse_mtime(f[2], fl[2], &e->mtime)) {
		*why = "MTIME is not SECONDS[.NANOSECONDS]";
		return -EINVAL;
	}
	if (!(fl[3] == 1 && f[3][0] == '-')) {
		if (url_decode(f[3], fl[3], &e->etag)) {
			*why = "bad percent-encoding in ETAG";
			return -EINVAL;
		}
	}
	if (url_decode(f[4], fl[4], &s)) {
		*why = "bad percent-encoding in PATH";
		return -EINVAL;
	}
	e->name = s;
	if (strlen(s) > MANIFEST_MAX_PATH || !url_path_is_safe(s)) {
		*why = "unsafe PATH (absolute, empty, '.', '..' or a component over 255 bytes)";
		return -EINVAL;
	}
	if (nr == 6) {
		if (url_decode(f[5], fl[5], &e->link_target)) {
			*why = "bad percent-encoding in symlink target";
			return -EINVAL;
		}
	}
	return 0;
}

int manifest_parse(
	const char *buf, size_t len, remote_list_cb cb, void *arg, char *errbuf, size_t errlen)
{
	const char *p = buf, *end = buf + len;
	unsigned long lineno = 0;
	int ret = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct remote_entry e = {0};
		const char *why = NULL;

		lineno++;
		if (ll && p[ll - 1] == '\r')
			ll--;
		if (memchr(p, '\0', ll)) {
			snprintf(errbuf, errlen, "manifest line %lu: NUL byte", lineno);
			return -EINVAL;
		}
		if (lineno == 1) {
			if (ll != strlen(MANIFEST_HEADER) || memcmp(p, MANIFEST_HEADER, ll)) {
				snprintf(errbuf, errlen, "manifest line 1: expected '%s'",
					MANIFEST_HEADER);
				return -EINVAL;
			}
		} else {
			ret = parse_line(p, ll, &e, &why);
			if (ret) {
				remote_entry_done(&e);
				snprintf(errbuf, errlen, "manifest line %lu: %s", lineno,
					why ? why : "malformed");
				return ret;
			}
			ret = cb(arg, &e);
			remote_entry_done(&e);
			if (ret)
				return ret;
		}
		p = nl ? nl + 1 : end;
	}
	if (lineno == 0) {
		snprintf(errbuf, errlen, "manifest is empty: expected '%s'", MANIFEST_HEADER);
		return -EINVAL;
	}
	return 0;
}

int manifest_write_header(FILE *out)
{
	return fprintf(out, "%s\n", MANIFEST_HEADER) < 0 ? -EIO : 0;
}

int manifest_write_entry(FILE *out, const char *path, const struct remote_entry *e)
{
	char *p = url_encode_path(path), *etag = NULL, *target = NULL;
	char type = e->type == REMOTE_DIR ? 'd' : e->type == REMOTE_SYMLINK ? 'l' : 'f';
	int ret = -ENOMEM;

	if (!p)
		goto out;
	if (e->etag && !(etag = url_encode_component(e->etag)))
		goto out;
	/* A lone '-' is the "no ETag" field: an ETag "-" must be escaped, or it would read back
	 * as none and the object would lose its version (found by fuzz_manifest). */
	if (etag && !strcmp(etag, "-")) {
		free(etag);
		etag = strdup("%2D");
		if (!etag)
			goto out;
	}
	if (e->type == REMOTE_SYMLINK &&
		!(target = url_encode_component(e->link_target ? e->link_target : "")))
		goto out;
	ret = fprintf(out, "%c %" PRIu64 " %lld.%09ld %s %s%s%s\n", type,
		      e->type == REMOTE_DIR ? (uint64_t)0 : e->size, (long long)e->mtime.tv_sec,
		      e->mtime.tv_nsec, etag && *etag ? etag : "-", p, target ? " " : "",
		      target ? target : "") < 0
		      ? -EIO
		      : 0;
out:
	free(p);
	free(etag);
	free(target);
	return ret;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Writes the entries under rel (relative to the tree's root; "" for the root), depth first in
 * byte order of names, so that a manifest of the same tree is always the same file. */
static int write_dir(int rootfd, const char *rel, FILE *out, char *errbuf, size_t errlen)
{
	struct dirent **names = NULL;
	int fd, n, i, ret = 0;

	fd = openat(rootfd, *rel ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot open directory '%s': %s", *rel ? rel : ".",
			strerror(errno));
		return ret;
	}
	n = scandirat(fd, ".", &names, NULL, name_cmp);
	if (n < 0) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot read directory '%s': %s", *rel ? rel : ".",
			strerror(errno));
		goto out;
	}
	for (i = 0; i < n && !ret; i++) {
		const char *nm = names[i]->d_name;
		struct remote_entry e = {0};
		char target[PATH_MAX];
		struct stat st;
		char *path;

		if (!strcmp(nm, ".") || !strcmp(nm, "..") || (!*rel && !strcmp(nm, MANIFEST_NAME)))
			continue;
		if (asprintf(&path, "%s%s%s", rel, *rel ? "/" : "", nm) < 0) {
			ret = -ENOMEM;
			break;
		}
		if (fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW)) {
			ret = -errno;
			snprintf(errbuf, errlen, "cannot stat '%s': %s", path, strerror(errno));
			free(path);
			break;
		}
		e.mtime = st.st_mtim;
		if (S_ISREG(st.st_mode)) {
			e.type = REMOTE_FILE;
			e.size = (uint64_t)st.st_size;
			ret = manifest_write_entry(out, path, &e);
		} else if (S_ISDIR(st.st_mode)) {
			e.type = REMOTE_DIR;
			ret = manifest_write_entry(out, path, &e);
			if (!ret)
				ret = write_dir(rootfd, path, out, errbuf, errlen);
		} else if (S_ISLNK(st.st_mode)) {
			ssize_t tl = readlinkat(fd, nm, target, sizeof(target) - 1);

			if (tl < 0) {
				ret = -errno;
				snprintf(errbuf, errlen, "cannot read link '%s': %s", path,
					strerror(errno));
			} else {
				target[tl] = '\0';
				e.type = REMOTE_SYMLINK;
				e.size = (uint64_t)tl;
				e.link_target = target;
				ret = manifest_write_entry(out, path, &e);
			}
		} else {
			log_warn("manifest: skipping '%s': not a file, directory or symlink", path);
		}
		if (ret == -EIO && !*errbuf)
			snprintf(errbuf, errlen, "cannot write manifest: %s", strerror(EIO));
		free(path);
	}
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	close(fd);
	return ret;
}

int manifest_write_tree(const char *dir, FILE *out, char *errbuf, size_t errlen)
{
	int rootfd, ret;

	if (errlen)
		errbuf[0] = '\0';
	rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		ret = -errno;
		snprintf(errbuf, errlen, "cannot open directory '%s': %s", dir, strerror(errno));
		return ret;
	}
	ret = manifest_write_header(out);
	if (!ret)
		ret = write_dir(rootfd, "", out, errbuf, errlen);
	if (!ret && fflush(out))
		ret = -errno;
	if (ret && errlen && !errbuf[0])
		snprintf(errbuf, errlen, "cannot write manifest: %s", strerror(-ret));
	close(rootfd);
	return ret;
}
