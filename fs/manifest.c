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
#include "fs/remote/url.h"

#define MANIFEST_HEADER   "ferry-manifest 1"
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

int manifest_parse(const char *buf, size_t len, remote_list_cb cb, void *arg, char *errbuf,
	size_t errlen)
{
	const char *p = buf, *end = buf + len;
	unsigned long lineno = 0;
	int ret = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct remote_entry e = { 0 };
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

/* Writes v in decimal at o, at least min_digits of it (zeros before); returns the end. */
static char *put_u64(char *o, uint64_t v, int min_digits)
{
	char d[20];
	int n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v || n < min_digits);
	while (n)
		*o++ = d[--n];
	return o;
}

/* One line, formatted by hand: a daemon writes a kept listing for each directory it lists, and
 * at ten million entries fprintf and an encoded copy per field were a third of its CPU. */
int manifest_write_entry(FILE *out, const char *path, const struct remote_entry *e)
{
	const char *etag = e->etag && *e->etag ? e->etag : NULL;
	const char *target =
		e->type == REMOTE_SYMLINK ? (e->link_target ? e->link_target : "") : NULL;
	size_t cap =
		3 * (strlen(path) + (etag ? strlen(etag) : 0) + (target ? strlen(target) : 0)) + 64;
	char stack[1024], *buf = cap <= sizeof(stack) ? stack : malloc(cap), *o = buf;
	int64_t sec = e->mtime.tv_sec;
	int ret;

	if (!buf)
		return -ENOMEM;
	*o++ = e->type == REMOTE_DIR ? 'd' : e->type == REMOTE_SYMLINK ? 'l' : 'f';
	*o++ = ' ';
	o = put_u64(o, e->type == REMOTE_DIR ? 0 : e->size, 1);
	*o++ = ' ';
	if (sec < 0)
		*o++ = '-';
	o = put_u64(o, sec < 0 ? -(uint64_t)sec : (uint64_t)sec, 1);
	*o++ = '.';
	o = put_u64(o, (uint64_t)e->mtime.tv_nsec, 9);
	*o++ = ' ';
	if (!etag) {
		*o++ = '-';
	} else {
		size_t n = url_encode_to(o, etag, false);

		/* A lone '-' is the "no ETag" field: an ETag "-" must be escaped, or it would
		 * read back as none and the object would lose its version (found by
		 * fuzz_manifest). */
		if (n == 1 && *o == '-') {
			memcpy(o, "%2D", 3);
			n = 3;
		}
		o += n;
	}
	*o++ = ' ';
	o += url_encode_to(o, path, true);
	if (target) {
		*o++ = ' ';
		o += url_encode_to(o, target, false);
	}
	*o++ = '\n';
	ret = fwrite(buf, 1, (size_t)(o - buf), out) == (size_t)(o - buf) ? 0 : -EIO;
	if (buf != stack)
		free(buf);
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
		struct remote_entry e = { 0 };
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

/* ---- the index ---- */

/* One entry, 24 bytes (ten million of them stay in memory for the mount's life). What is left
 * is in the arena, before and at path_off: REC_PREFIX bytes (whether it has an ETag, then the
 * bytes of the path before its last '/', 0 at the root, 16 bits little-endian), then the path,
 * the ETag when it has one, and the target for a symlink, each NUL-terminated. */
struct man_rec {
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec : 30;
	uint32_t type : 2; /* enum remote_type */
	uint32_t path_off;
};

#define REC_PREFIX 3

_Static_assert(sizeof(struct man_rec) == 24, "a manifest record grew");

static bool rec_has_etag(const struct manifest_index *m, const struct man_rec *r);
static size_t rec_parent_bytes(const struct manifest_index *m, const struct man_rec *r);

struct manifest_index {
	char *arena;
	size_t arena_bytes, arena_cap;
	struct man_rec *recs; /* sorted by (parent, name, line) */
	size_t nr_recs, cap_recs;
};

/* A path split into its parent directory and its name, as the records are ordered. */
struct man_key {
	const char *parent;
	size_t parent_bytes;
	const char *name;
};

static struct man_key key_of_path(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return (struct man_key){ .parent = path, .parent_bytes = 0, .name = path };
	return (struct man_key){ .parent = path,
		.parent_bytes = (size_t)(slash - path),
		.name = slash + 1 };
}

static bool rec_has_etag(const struct manifest_index *m, const struct man_rec *r)
{
	return m->arena[r->path_off - REC_PREFIX];
}

static size_t rec_parent_bytes(const struct manifest_index *m, const struct man_rec *r)
{
	const unsigned char *p = (const unsigned char *)m->arena + r->path_off - 2;

	return (size_t)p[0] | (size_t)p[1] << 8;
}

static struct man_key key_of_rec(const struct manifest_index *m, const struct man_rec *r)
{
	const char *path = m->arena + r->path_off;
	size_t parent_bytes = rec_parent_bytes(m, r);

	return (struct man_key){ .parent = path,
		.parent_bytes = parent_bytes,
		.name = path + parent_bytes + (parent_bytes ? 1 : 0) };
}

static int parent_cmp(const struct man_key *a, const char *parent, size_t parent_bytes)
{
	int c = memcmp(a->parent, parent,
		a->parent_bytes < parent_bytes ? a->parent_bytes : parent_bytes);

	return c ? c : (a->parent_bytes > parent_bytes) - (a->parent_bytes < parent_bytes);
}

static int key_cmp(const struct man_key *a, const struct man_key *b)
{
	int c = parent_cmp(a, b->parent, b->parent_bytes);

	return c ? c : strcmp(a->name, b->name);
}

/* Ties (one path listed twice) go by position in the arena: the manifest's order. */
static int rec_cmp(const void *a, const void *b, void *arg)
{
	const struct manifest_index *m = arg;
	const struct man_rec *x = a, *y = b;
	struct man_key kx = key_of_rec(m, x), ky = key_of_rec(m, y);
	int c = key_cmp(&kx, &ky);

	return c ? c : (x->path_off > y->path_off) - (x->path_off < y->path_off);
}

static void index_sort(struct manifest_index *m)
{
	if (m->nr_recs) /* recs is NULL for an empty manifest */
		qsort_r(m->recs, m->nr_recs, sizeof(*m->recs), rec_cmp, m);
}

/* Appends bytes of s, then a NUL unless nul is false. */
static int arena_put(struct manifest_index *m, const char *s, size_t bytes, bool nul)
{
	if (m->arena_bytes + bytes + 1 > UINT32_MAX)
		return -EFBIG;
	if (m->arena_bytes + bytes + 1 > m->arena_cap) {
		size_t cap = m->arena_cap ? m->arena_cap * 2 : 1 << 20;
		char *a;

		while (cap < m->arena_bytes + bytes + 1)
			cap *= 2;
		a = realloc(m->arena, cap);
		if (!a)
			return -ENOMEM;
		m->arena = a;
		m->arena_cap = cap;
	}
	memcpy(m->arena + m->arena_bytes, s, bytes);
	m->arena_bytes += bytes;
	if (nul)
		m->arena[m->arena_bytes++] = '\0';
	return 0;
}

static int arena_add(struct manifest_index *m, const char *s, size_t bytes)
{
	return arena_put(m, s, bytes, true);
}

static int index_add(struct manifest_index *m, const char *path, size_t path_bytes,
	const struct remote_entry *e)
{
	const char *slash = memrchr(path, '/', path_bytes);
	size_t parent_bytes = slash ? (size_t)(slash - path) : 0;
	char prefix[REC_PREFIX] = { e->etag != NULL, (char)(parent_bytes & 0xff),
		(char)(parent_bytes >> 8) };
	struct man_rec *r;
	int ret;

	if (m->nr_recs == m->cap_recs) {
		size_t cap = m->cap_recs ? m->cap_recs * 2 : 1024;
		struct man_rec *v = realloc(m->recs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		m->recs = v;
		m->cap_recs = cap;
	}
	/* Paths are at most MANIFEST_MAX_PATH bytes, so parent_bytes fits its 16 bits. */
	ret = arena_put(m, prefix, sizeof(prefix), false);
	if (ret)
		return ret;
	r = &m->recs[m->nr_recs];
	*r = (struct man_rec){
		.path_off = (uint32_t)m->arena_bytes,
		.size = e->size,
		.mtime_sec = e->mtime.tv_sec,
		.mtime_nsec = (uint32_t)e->mtime.tv_nsec,
		.type = (uint32_t)e->type,
	};
	ret = arena_add(m, path, path_bytes);
	if (!ret && e->etag)
		ret = arena_add(m, e->etag, strlen(e->etag));
	if (!ret && e->type == REMOTE_SYMLINK)
		ret = arena_add(m, e->link_target ? e->link_target : "",
			e->link_target ? strlen(e->link_target) : 0);
	if (!ret)
		m->nr_recs++;
	return ret;
}

static int index_collect(void *arg, const struct remote_entry *e)
{
	return index_add(arg, e->name, strlen(e->name), e);
}

/* The record of path among the first nr (sorted), or NULL. */
static const struct man_rec *index_find(const struct manifest_index *m, size_t nr, const char *path)
{
	struct man_key k = key_of_path(path);
	size_t lo = 0, hi = nr;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct man_key km = key_of_rec(m, &m->recs[mid]);
		int c = key_cmp(&km, &k);

		if (c == 0)
			return &m->recs[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Drops the second and later records of one path (sorted: they follow the first). */
static void index_drop_duplicates(struct manifest_index *m)
{
	size_t out = 0;

	for (size_t i = 0; i < m->nr_recs; i++) {
		if (out) {
			struct man_key a = key_of_rec(m, &m->recs[out - 1]);
			struct man_key b = key_of_rec(m, &m->recs[i]);

			if (!key_cmp(&a, &b)) {
				log_warn("manifest lists '%s' twice; keeping the first",
					m->arena + m->recs[i].path_off);
				continue;
			}
		}
		m->recs[out++] = m->recs[i];
	}
	m->nr_recs = out;
}

/* Adds a directory record for each parent that is not listed; one round adds the parents of
 * what the previous round added. Takes the records sorted and without duplicates, and leaves
 * them so. */
static int index_add_parents(struct manifest_index *m, char *errbuf, size_t errlen)
{
	struct remote_entry dir = { .type = REMOTE_DIR };
	size_t nr;
	int ret;

	do {
		nr = m->nr_recs;
		for (size_t i = 0; i < nr; i++) {
			struct man_key k = key_of_rec(m, &m->recs[i]);
			const struct man_rec *p;
			char *parent;

			if (!k.parent_bytes)
				continue;
			/* Records sharing a parent are adjacent: check each parent once. */
			if (i) {
				struct man_key prev = key_of_rec(m, &m->recs[i - 1]);

				if (!parent_cmp(&k, prev.parent, prev.parent_bytes))
					continue;
			}
			parent = strndup(k.parent, k.parent_bytes);
			if (!parent)
				return -ENOMEM;
			p = index_find(m, nr, parent);
			if (p && p->type != REMOTE_DIR) {
				/* names cut short so that the reason always fits */
				snprintf(errbuf, errlen,
					"manifest lists '%.100s' under '%.100s', which is not a "
					"directory",
					k.name, parent);
				free(parent);
				return -EINVAL;
			}
			ret = p ? 0 : index_add(m, parent, k.parent_bytes, &dir);
			free(parent);
			if (ret)
				return ret;
		}
		if (m->nr_recs != nr)
			index_sort(m);
	} while (m->nr_recs != nr);
	return 0;
}

/* Gives back what the doubling arrays reserved beyond their end (up to half of each, which at
 * ten million entries is hundreds of MiB). */
static void index_shrink(struct manifest_index *m)
{
	struct man_rec *v = realloc(m->recs, (m->nr_recs ? m->nr_recs : 1) * sizeof(*v));
	char *a = realloc(m->arena, m->arena_bytes ? m->arena_bytes : 1);

	if (v) {
		m->recs = v;
		m->cap_recs = m->nr_recs;
	}
	if (a) {
		m->arena = a;
		m->arena_cap = m->arena_bytes;
	}
}

int manifest_index_new(struct manifest_index **out, const char *buf, size_t len, char *errbuf,
	size_t errlen)
{
	struct manifest_index *m = calloc(1, sizeof(*m));
	int ret;

	*out = NULL;
	if (!m) {
		ret = -ENOMEM;
		goto err;
	}
	ret = manifest_parse(buf, len, index_collect, m, errbuf, errlen);
	if (ret)
		goto err;
	index_sort(m);
	index_drop_duplicates(m);
	ret = index_add_parents(m, errbuf, errlen);
	if (ret)
		goto err;
	index_shrink(m);
	*out = m;
	return 0;
err:
	if (ret == -ENOMEM)
		snprintf(errbuf, errlen, "out of memory reading the manifest");
	if (ret == -EFBIG)
		snprintf(errbuf, errlen, "the manifest's paths add up to more than 4 GiB");
	manifest_index_free(m);
	return ret;
}

void manifest_index_free(struct manifest_index *m)
{
	if (!m)
		return;
	free(m->arena);
	free(m->recs);
	free(m);
}

uint64_t manifest_index_nr_entries(const struct manifest_index *m)
{
	return m->nr_recs;
}

/* r as an entry whose strings point into the arena. */
static struct remote_entry rec_entry(const struct manifest_index *m, const struct man_rec *r)
{
	struct man_key k = key_of_rec(m, r);
	char *s = m->arena + r->path_off;
	struct remote_entry e = {
		.name = (char *)k.name,
		.type = (enum remote_type)r->type,
		.size = r->size,
		.mtime = { .tv_sec = (time_t)r->mtime_sec, .tv_nsec = r->mtime_nsec },
	};

	s += strlen(s) + 1;
	if (rec_has_etag(m, r)) {
		e.etag = s;
		s += strlen(s) + 1;
	}
	if (r->type == REMOTE_SYMLINK)
		e.link_target = s;
	return e;
}

int manifest_index_list(const struct manifest_index *m, const char *path, remote_list_cb cb,
	void *arg)
{
	size_t lo = 0, hi = m->nr_recs, path_bytes = strlen(path);
	int ret = 0;

	if (*path) {
		const struct man_rec *d = index_find(m, m->nr_recs, path);

		if (!d)
			return -ENOENT;
		if (d->type != REMOTE_DIR)
			return -ENOTDIR;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct man_key k = key_of_rec(m, &m->recs[mid]);

		if (parent_cmp(&k, path, path_bytes) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < m->nr_recs && !ret; lo++) {
		struct man_key k = key_of_rec(m, &m->recs[lo]);
		struct remote_entry e;

		if (parent_cmp(&k, path, path_bytes))
			break;
		e = rec_entry(m, &m->recs[lo]);
		ret = cb(arg, &e);
	}
	return ret;
}

int manifest_index_stat(const struct manifest_index *m, const char *path, struct remote_entry *e)
{
	const struct man_rec *r = index_find(m, m->nr_recs, path);
	struct remote_entry a;

	memset(e, 0, sizeof(*e));
	if (!r)
		return -ENOENT;
	a = rec_entry(m, r);
	*e = a;
	e->name = strdup(a.name);
	e->etag = a.etag ? strdup(a.etag) : NULL;
	e->link_target = a.link_target ? strdup(a.link_target) : NULL;
	if (!e->name || (a.etag && !e->etag) || (a.link_target && !e->link_target)) {
		remote_entry_done(e);
		return -ENOMEM;
	}
	return 0;
}
