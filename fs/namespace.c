/* The namespace: inode table and lazily listed directories between the FUSE operations and
 * the remote backend; listings are also written to the cache directory (manifest format) so
 * that a remount with the source unreachable still lists what was seen. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/log.h"
#include "fs/manifest.h"
#include "fs/namespace.h"
#include "fs/remote/url.h"

/* What only a directory has: its listing. list_lock serialises listers of the directory (held
 * without ns->lock while the remote is asked; never taken while holding ns->lock); the rest is
 * protected by ns->lock. */
struct ns_dirstate {
	pthread_mutex_t list_lock;
	struct ns_node **children; /* sorted by name */
	size_t nr_children;
	bool listed;
	bool dirty;                /* the kept listing is older than children */
	struct timespec listed_at; /* CLOCK_MONOTONIC */
};

/* One file, directory or symlink, in one allocation with its path: there is one per entry seen,
 * ten million of them for a big dataset, so it holds only what every entry needs, and what one
 * type needs shares a union.
 * ino, parent_ino, type, name_off and path never change after creation (a relist that changes
 * an entry's type makes a new node). Everything else is protected by ns->lock.
 * A node lives while it is linked in its parent's listing, the kernel holds lookups on it
 * (nlookup), or someone holds a temporary reference (refs); the root lives until
 * namespace_free. */
struct ns_node {
	uint64_t ino;
	uint64_t parent_ino;
	uint64_t size;
	struct timespec mtime;
	char *etag;
	union {
		char *last_open_version; /* REMOTE_FILE: version at the previous open (keep_cache) */
		char *link_target;       /* REMOTE_SYMLINK: never NULL */
		struct ns_dirstate *ds;  /* REMOTE_DIR: never NULL */
	};
	uint64_t nlookup;
	uint32_t refs;
	uint16_t name_off;        /* the name is path + name_off */
	uint8_t type;             /* enum remote_type */
	bool version_checked : 1; /* stat'ed since the last listing */
	bool linked : 1;
	bool kept : 1; /* scratch of listing_merge: reused by the new listing */
	/* The remote path, then the name. The name is the path's last component, except for a
	 * single-file source's one file: its path is "" and its name follows that NUL. */
	char path[];
};

/* The table is protected by lock; remote, state_dir, ttl, uid, gid never change.
 * store_lock orders the writers of kept listings (a snapshot taken later is renamed later);
 * it is taken before lock, never while holding it. */
struct namespace
{
	struct remote *remote;
	char *source;
	char *state_dir;
	double ttl_s;
	uid_t uid;
	gid_t gid;
	bool allow_outside_symlinks;
	bool single_file; /* the source is one object, shown inside the root */
	atomic_bool warned_outside_link;

	pthread_mutex_t store_lock;
	pthread_mutex_t lock;
	struct ns_page **pages; /* the inode table: see table_find */
	size_t nr_pages;        /* length of pages, some of them NULL */
	size_t nr_nodes;
	uint64_t next_ino;
	struct ns_node *root;
};

bool namespace_link_stays_inside(const char *dir_path, const char *target)
{
	size_t depth = 0, n;
	bool named = false;

	if (!*target || *target == '/')
		return false;
	for (const char *p = dir_path; *p; p += n) {
		p += strspn(p, "/");
		n = strcspn(p, "/");
		if (n)
			depth++;
	}
	for (const char *p = target; *p; p += n) {
		p += strspn(p, "/");
		n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (named || !depth)
				return false;
			depth--;
		} else if (n && !(n == 1 && p[0] == '.')) {
			named = true;
		}
	}
	return true;
}

static double elapsed_s(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - since->tv_sec) + (now.tv_nsec - since->tv_nsec) / 1e9;
}

static const char *node_name(const struct ns_node *n)
{
	return n->path + n->name_off;
}

/* ---- inode table (callers hold ns->lock) ---- */

/* Inode numbers are handed out in order and never reused, so one number never names two
 * entries, and the table is an array indexed by them, in pages so that it grows without
 * moving: 8 bytes per entry, where a hash table took 20 (its chain pointer and its load
 * factor). A page whose nodes are all gone is freed. */
#define NS_PAGE_NODES 1024 /* 8 KiB */

struct ns_page {
	size_t nr_live;
	struct ns_node *slot[NS_PAGE_NODES];
};

static struct ns_node *table_find(struct namespace *ns, uint64_t ino)
{
	size_t p = (size_t)(ino / NS_PAGE_NODES);

	if (p >= ns->nr_pages || !ns->pages[p])
		return NULL;
	return ns->pages[p]->slot[ino % NS_PAGE_NODES];
}

/* The live node with the smallest ino >= *ino, advancing *ino past it; NULL after the last. */
static struct ns_node *table_next(struct namespace *ns, uint64_t *ino)
{
	while (*ino < ns->next_ino) {
		struct ns_page *page = ns->pages[*ino / NS_PAGE_NODES];
		struct ns_node *n;

		if (!page) {
			*ino = (*ino / NS_PAGE_NODES + 1) * NS_PAGE_NODES;
			continue;
		}
		n = page->slot[(*ino)++ % NS_PAGE_NODES];
		if (n)
			return n;
	}
	return NULL;
}

static int table_add(struct namespace *ns, struct ns_node *n)
{
	size_t p = (size_t)(ns->next_ino / NS_PAGE_NODES);

	if (p >= ns->nr_pages) {
		size_t nr = ns->nr_pages ? ns->nr_pages * 2 : 16;
		struct ns_page **v = realloc(ns->pages, nr * sizeof(*v));

		if (!v)
			return -ENOMEM;
		memset(v + ns->nr_pages, 0, (nr - ns->nr_pages) * sizeof(*v));
		ns->pages = v;
		ns->nr_pages = nr;
	}
	if (!ns->pages[p] && !(ns->pages[p] = calloc(1, sizeof(*ns->pages[p]))))
		return -ENOMEM;
	n->ino = ns->next_ino++;
	ns->pages[p]->slot[n->ino % NS_PAGE_NODES] = n;
	ns->pages[p]->nr_live++;
	ns->nr_nodes++;
	return 0;
}

static void table_remove(struct namespace *ns, struct ns_node *n)
{
	size_t p = (size_t)(n->ino / NS_PAGE_NODES);
	struct ns_page *page = ns->pages[p];

	page->slot[n->ino % NS_PAGE_NODES] = NULL;
	/* The page that next_ino is filling stays, or the next node would allocate it again. */
	if (!--page->nr_live && p != ns->next_ino / NS_PAGE_NODES) {
		free(page);
		ns->pages[p] = NULL;
	}
	ns->nr_nodes--;
}

static void node_free(struct ns_node *n)
{
	if (!n)
		return;
	if (n->type == REMOTE_DIR && n->ds) {
		pthread_mutex_destroy(&n->ds->list_lock);
		free(n->ds->children);
		free(n->ds);
	} else if (n->type == REMOTE_SYMLINK) {
		free(n->link_target);
	} else if (n->type == REMOTE_FILE) {
		free(n->last_open_version);
	}
	free(n->etag);
	free(n);
}

static void node_maybe_free(struct namespace *ns, struct ns_node *n);

/* Drops n's children from its listing (n itself is going away or being relisted). */
static void unlink_children(struct namespace *ns, struct ns_node **children, size_t nr)
{
	for (size_t i = 0; i < nr; i++) {
		children[i]->linked = false;
		node_maybe_free(ns, children[i]);
	}
}

static void node_maybe_free(struct namespace *ns, struct ns_node *n)
{
	if (n == ns->root || n->linked || n->nlookup || n->refs)
		return;
	table_remove(ns, n);
	if (n->type == REMOTE_DIR)
		unlink_children(ns, n->ds->children, n->ds->nr_children);
	node_free(n);
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? strdup(src) : NULL;
}

static struct ns_node *node_new(struct namespace *ns, uint64_t parent_ino, const char *dir_path,
	const struct remote_entry *e)
{
	size_t dir_bytes = ns->single_file ? 0 : strlen(dir_path), name_bytes = strlen(e->name);
	size_t name_off = ns->single_file ? 1 : dir_bytes ? dir_bytes + 1 : 0;
	struct ns_node *n;

	/* No store hands out a directory path of 64 KiB (PATH_MAX is 4 KiB). */
	if (name_off > UINT16_MAX)
		return NULL;
	n = calloc(1, offsetof(struct ns_node, path) + name_off + name_bytes + 1);
	if (!n)
		return NULL;
	if (dir_bytes) {
		memcpy(n->path, dir_path, dir_bytes);
		n->path[dir_bytes] = '/';
	}
	memcpy(n->path + name_off, e->name, name_bytes + 1);
	n->name_off = (uint16_t)name_off;
	n->parent_ino = parent_ino;
	n->type = (uint8_t)e->type;
	n->size = e->size;
	n->mtime = e->mtime;
	n->etag = e->etag ? strdup(e->etag) : NULL;
	if (n->type == REMOTE_SYMLINK)
		n->link_target = strdup(e->link_target ? e->link_target : "");
	else if (n->type == REMOTE_DIR && (n->ds = calloc(1, sizeof(*n->ds))))
		pthread_mutex_init(&n->ds->list_lock, NULL);
	if ((e->etag && !n->etag) || (n->type == REMOTE_SYMLINK && !n->link_target) ||
		(n->type == REMOTE_DIR && !n->ds)) {
		node_free(n);
		return NULL;
	}
	return n;
}

/* ---- listings ---- */

/* Entries of one listing being gathered, outside ns->lock, for directory dir_path. */
struct listing {
	struct namespace *ns;
	const char *dir_path;
	struct remote_entry *entries;
	size_t nr, cap;
	size_t nr_unsafe;
	char *first_unsafe;
};

static void listing_done(struct listing *l)
{
	for (size_t i = 0; i < l->nr; i++)
		remote_entry_done(&l->entries[i]);
	free(l->entries);
	free(l->first_unsafe);
	l->entries = NULL;
	l->first_unsafe = NULL;
	l->nr = l->cap = l->nr_unsafe = 0;
}

/* The symlink policy (namespace.h): whether e may be shown; warns once per mount. */
static bool listing_link_allowed(struct listing *l, const struct remote_entry *e)
{
	const char *target = e->link_target ? e->link_target : "";

	if (l->ns->allow_outside_symlinks || namespace_link_stays_inside(l->dir_path, target))
		return true;
	if (!atomic_exchange(&l->ns->warned_outside_link, true))
		log_warn("hiding symlink '/%s%s%s' -> '%.200s': its target is absolute or leaves "
			 "the mount (mount option allow_outside_symlinks shows such links); "
			 "others like it are hidden without a warning",
			l->dir_path, *l->dir_path ? "/" : "", e->name, target);
	return false;
}

static int listing_add(void *arg, const struct remote_entry *e)
{
	struct listing *l = arg;
	struct remote_entry *d;

	if (!url_name_is_safe(e->name, strlen(e->name))) {
		if (!l->nr_unsafe++)
			l->first_unsafe = strndup(e->name, 64);
		return 0;
	}
	if (e->type == REMOTE_SYMLINK && !listing_link_allowed(l, e))
		return 0;
	if (l->nr == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct remote_entry *n = realloc(l->entries, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		l->entries = n;
		l->cap = cap;
	}
	d = &l->entries[l->nr];
	memset(d, 0, sizeof(*d));
	d->type = e->type;
	d->size = e->type == REMOTE_DIR ? 0 : e->size;
	d->mtime = e->mtime;
	d->name = strdup(e->name);
	/* `*` or "" is no version: the entry is versioned by mtime and size instead. */
	d->etag = remote_etag_is_version(e->etag) ? strdup(e->etag) : NULL;
	d->link_target = e->link_target ? strdup(e->link_target) : NULL;
	if (e->type == REMOTE_SYMLINK && !d->link_target)
		d->link_target = strdup("");
	if (!d->name || (remote_etag_is_version(e->etag) && !d->etag) ||
		(e->type == REMOTE_SYMLINK && !d->link_target)) {
		remote_entry_done(d);
		return -ENOMEM;
	}
	l->nr++;
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct remote_entry *)a)->name,
		((const struct remote_entry *)b)->name);
}

static int cmp_child(const void *key, const void *elem)
{
	return strcmp(key, node_name(*(struct ns_node *const *)elem));
}

/* bsearch of a directory's children; NULL-safe for an empty listing (bsearch's base must not
 * be NULL even when there is nothing to search). */
static struct ns_node **find_child(struct ns_node *dir, const char *name)
{
	if (!dir->ds->nr_children)
		return NULL;
	return bsearch(name, dir->ds->children, dir->ds->nr_children, sizeof(*dir->ds->children),
		cmp_child);
}

static char *listing_file(struct namespace *ns, const char *path)
{
	char *p;

	if (asprintf(&p, "%s/%016llx.list", ns->state_dir,
		    (unsigned long long)XXH3_64bits(path, strlen(path))) < 0)
		return NULL;
	return p;
}

/* Why a kept listing file may not be trusted, or NULL: the state directory is the daemon's
 * (0700), so a file in it that another user owns or may write was planted or left by a
 * careless copy, and would let that user choose what this mount lists (a symlink to
 * /etc/shadow, a file of another version). */
static const char *listing_untrusted(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "is not a regular file";
	if (st->st_uid != geteuid())
		return "is not owned by the daemon's user";
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return "is writable by group or others";
	return NULL;
}

/* Reads a listing kept by an earlier mount; -ENOENT when there is none. One that cannot be
 * trusted or does not parse is removed with a warning and is -EBADMSG: never served. */
static int listing_load(struct namespace *ns, const char *path, struct listing *l)
{
	char *file = listing_file(ns, path), *buf = NULL, err[256], bad[300];
	const char *why = NULL;
	size_t len = 0, cap = 0;
	struct stat st;
	int fd = -1, ret;

	if (!file)
		return -ENOMEM;
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		ret = errno == ELOOP ? -EBADMSG : -errno;
		if (ret == -EBADMSG)
			why = "is a symlink";
		goto out;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	why = listing_untrusted(&st);
	if (why) {
		ret = -EBADMSG;
		goto out;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *b = realloc(buf, cap = cap ? cap * 2 : 65536);

			if (!b) {
				ret = -ENOMEM;
				goto out;
			}
			buf = b;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	ret = manifest_parse(buf, len, listing_add, l, err, sizeof(err));
	if (ret == -ENOMEM)
		goto out;
	if (ret) {
		snprintf(bad, sizeof(bad), "does not parse (%s)", err);
		why = bad;
		ret = -EBADMSG;
	}
out:
	if (ret == -EBADMSG) {
		/* Nothing of it is served, not even the entries read before a parse error. */
		listing_done(l);
		log_warn("kept listing %s %s; removing it, not serving it", file, why);
		if (unlink(file))
			log_warn("cannot remove %s: %s", file, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	free(file);
	return ret;
}

/* The text of dir's listing (manifest format) in a new buffer. Caller holds ns->lock. */
static int listing_snapshot(struct ns_node *dir, char **text, size_t *len)
{
	FILE *f = open_memstream(text, len);
	int ret;

	if (!f)
		return -ENOMEM;
	ret = manifest_write_header(f);
	for (size_t i = 0; !ret && i < dir->ds->nr_children; i++) {
		struct ns_node *c = dir->ds->children[i];
		struct remote_entry e = {
			.type = c->type,
			.size = c->size,
			.mtime = c->mtime,
			.etag = c->etag,
			.link_target = c->type == REMOTE_SYMLINK ? c->link_target : NULL,
		};

		ret = manifest_write_entry(f, node_name(c), &e);
	}
	if (fclose(f) && !ret)
		ret = -ENOMEM;
	if (ret) {
		free(*text);
		*text = NULL;
	}
	return ret;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes one kept listing: temporary file made 0600 whatever the umask, fsync, rename over
 * the old one, fsync of the directory; a crash leaves the old file or the new one, never a
 * torn one. Caller holds ns->store_lock, not ns->lock (the disk is slow; lookups go on). */
static int listing_write(struct namespace *ns, const char *dir_path, const char *text, size_t len)
{
	char *file = listing_file(ns, dir_path), *tmp = NULL;
	int fd = -1, ret;

	if (!file || asprintf(&tmp, "%s.tmp.%d", file, (int)gettid()) < 0) {
		tmp = NULL;
		ret = -ENOMEM;
		goto out;
	}
	unlink(tmp); /* one left by a crash of a thread with this id */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = fchmod(fd, 0600) ? -errno : 0;
	if (!ret)
		ret = write_all(fd, text, len);
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	fd = -1;
	if (!ret && rename(tmp, file))
		ret = -errno;
	if (ret) {
		unlink(tmp);
		goto out;
	}
	fd = open(ns->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
out:
	if (ret)
		log_warn("cannot keep the listing of '/%s' in %s: %s", dir_path, ns->state_dir,
			strerror(-ret));
	free(tmp);
	free(file);
	return ret;
}

/* Keeps dir's listing on disk now. Caller holds neither ns->lock nor ns->store_lock, and a
 * reference on dir. */
static int listing_store(struct namespace *ns, struct ns_node *dir)
{
	char *text = NULL;
	size_t len = 0;
	int ret;

	pthread_mutex_lock(&ns->store_lock);
	pthread_mutex_lock(&ns->lock);
	ret = listing_snapshot(dir, &text, &len);
	if (!ret)
		dir->ds->dirty = false;
	pthread_mutex_unlock(&ns->lock);
	if (!ret)
		ret = listing_write(ns, dir->path, text, len);
	if (ret) {
		pthread_mutex_lock(&ns->lock);
		dir->ds->dirty = true;
		pthread_mutex_unlock(&ns->lock);
	}
	pthread_mutex_unlock(&ns->store_lock);
	free(text);
	return ret;
}

static bool same_version(const struct ns_node *n, const struct remote_entry *e)
{
	return n->size == e->size && n->mtime.tv_sec == e->mtime.tv_sec &&
	       n->mtime.tv_nsec == e->mtime.tv_nsec &&
	       ((!n->etag && !e->etag) || (n->etag && e->etag && !strcmp(n->etag, e->etag)));
}

/* Replaces dir's children by the entries of l, keeping the nodes (and inode numbers) of names
 * whose type did not change. Caller holds ns->lock. */
static int listing_merge(struct namespace *ns, struct ns_node *dir, struct listing *l)
{
	struct ns_node **kids = calloc(l->nr ? l->nr : 1, sizeof(*kids));
	size_t nr = 0;

	if (!kids)
		return -ENOMEM;
	if (l->nr)
		qsort(l->entries, l->nr, sizeof(*l->entries), cmp_entry);
	for (size_t i = 0; i < l->nr; i++) {
		struct remote_entry *e = &l->entries[i];
		struct ns_node **old, *n;

		/* Duplicates (an S3 key next to a prefix of the same name): the first wins. */
		if (nr && !strcmp(node_name(kids[nr - 1]), e->name))
			continue;
		old = find_child(dir, e->name);
		if (old && (*old)->type == e->type) {
			n = *old;
			if (!same_version(n, e)) {
				n->size = e->size;
				n->mtime = e->mtime;
				set_str(&n->etag, e->etag);
			}
			if (n->type == REMOTE_SYMLINK)
				set_str(&n->link_target, e->link_target);
			n->version_checked = false;
			n->kept = true;
		} else {
			n = node_new(ns, dir->ino, dir->path, e);
			if (!n || table_add(ns, n)) {
				node_free(n);
				/* Undo: the old listing stays, the new nodes go. */
				for (size_t k = 0; k < nr; k++) {
					if (kids[k]->kept) {
						kids[k]->kept = false;
						continue;
					}
					kids[k]->linked = false;
					node_maybe_free(ns, kids[k]);
				}
				free(kids);
				return -ENOMEM;
			}
		}
		n->linked = true;
		kids[nr++] = n;
	}
	for (size_t i = 0; i < dir->ds->nr_children; i++) {
		if (dir->ds->children[i]->kept) {
			dir->ds->children[i]->kept = false;
			continue;
		}
		dir->ds->children[i]->linked = false;
		node_maybe_free(ns, dir->ds->children[i]);
	}
	free(dir->ds->children);
	dir->ds->children = kids;
	dir->ds->nr_children = nr;
	dir->ds->listed = true;
	clock_gettime(CLOCK_MONOTONIC, &dir->ds->listed_at);
	return 0;
}

static bool listing_is_fresh(struct namespace *ns, struct ns_node *dir)
{
	if (!dir->ds->listed)
		return false;
	/* Offline: what was kept is all there is; never ask again. */
	if (!ns->remote || ns->ttl_s < 0)
		return true;
	return elapsed_s(&dir->ds->listed_at) < ns->ttl_s;
}

/* Builds the single-file root's one entry from the source's own stat. */
static int list_single_file(struct namespace *ns, struct listing *l)
{
	struct remote_entry e;
	const char *end, *start;
	char *name;
	int ret;

	ret = ns->remote->ops->stat(ns->remote, "", &e);
	if (ret)
		return ret;
	/* The file is shown under the last component of the source, decoded. */
	end = ns->source + strcspn(ns->source, "?#");
	while (end > ns->source && end[-1] == '/')
		end--;
	start = end;
	while (start > ns->source && start[-1] != '/')
		start--;
	/* Decoded as a URL's last component; a local path's '%' that is no escape stays. */
	if (url_decode(start, (size_t)(end - start), &name))
		name = strndup(start, (size_t)(end - start));
	if (name && !name[0]) {
		free(name);
		name = strdup("file");
	}
	free(e.name);
	e.name = name;
	e.type = REMOTE_FILE;
	ret = e.name ? listing_add(l, &e) : -ENOMEM;
	remote_entry_done(&e);
	return ret;
}

/* Makes dir's listing fresh: from the remote when online (kept on disk on success; on
 * failure the previous listing, or the kept one, is served with a warning), from the kept
 * listing when offline. Takes dir->ds->list_lock; caller holds a reference on dir but not
 * ns->lock. */
static int dir_refresh(struct namespace *ns, struct ns_node *dir)
{
	struct listing l = { .ns = ns, .dir_path = dir->path };
	bool fresh;
	int ret = 0;

	pthread_mutex_lock(&dir->ds->list_lock);
	pthread_mutex_lock(&ns->lock);
	fresh = listing_is_fresh(ns, dir);
	pthread_mutex_unlock(&ns->lock);
	if (fresh)
		goto out;

	if (ns->remote) {
		if (ns->single_file && dir == ns->root)
			ret = list_single_file(ns, &l);
		else
			ret = ns->remote->ops->list(ns->remote, dir->path, listing_add, &l);
		if (!ret) {
			if (l.nr_unsafe)
				log_warn("skipped %zu unsafe name%s in '/%s' (such as '%s')",
					l.nr_unsafe, l.nr_unsafe > 1 ? "s" : "", dir->path,
					l.first_unsafe ? l.first_unsafe : "");
			pthread_mutex_lock(&ns->lock);
			ret = listing_merge(ns, dir, &l);
			pthread_mutex_unlock(&ns->lock);
			if (!ret)
				listing_store(ns, dir);
			goto out;
		}
		listing_done(&l);
		pthread_mutex_lock(&ns->lock);
		if (dir->ds->listed) {
			/* Keep serving the old listing; try again after another ttl. */
			log_warn("cannot list '/%s' again (%s); keeping the previous listing",
				dir->path, strerror(-ret));
			clock_gettime(CLOCK_MONOTONIC, &dir->ds->listed_at);
			ret = 0;
			pthread_mutex_unlock(&ns->lock);
			goto out;
		}
		pthread_mutex_unlock(&ns->lock);
		log_warn("cannot list '/%s': %s", dir->path, strerror(-ret));
	}
	ret = listing_load(ns, dir->path, &l);
	if (ret) {
		if (ret == -ENOENT && !ns->remote)
			log_warn("'/%s' was never listed while online; it is empty offline",
				dir->path);
		ret = ns->remote ? -EIO : 0;
		if (!ns->remote) {
			/* Offline and never listed: an empty directory, said once. */
			listing_done(&l);
			pthread_mutex_lock(&ns->lock);
			ret = listing_merge(ns, dir, &l);
			pthread_mutex_unlock(&ns->lock);
		}
		goto out;
	}
	pthread_mutex_lock(&ns->lock);
	ret = listing_merge(ns, dir, &l);
	pthread_mutex_unlock(&ns->lock);
out:
	listing_done(&l);
	pthread_mutex_unlock(&dir->ds->list_lock);
	return ret;
}

/* ---- public ---- */

/* The directory of kept listings: made 0700 whatever the umask, and made so again when an
 * earlier version (or a careless copy) left it open to others; it must be a directory of
 * ours, not a symlink to somewhere else. */
static int state_dir_prepare(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
		log_warn("%s is not a directory of this user; not using it", dir);
		return -EPERM;
	}
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700))
		return -errno;
	return 0;
}

static void root_marker(struct namespace *ns, char *buf, size_t len)
{
	snprintf(buf, len, "%s/single-file", ns->state_dir);
}

int namespace_new(struct namespace **out, const struct namespace_config *cfg)
{
	struct namespace *ns = calloc(1, sizeof(*ns));
	struct remote_entry re = { .name = "", .type = REMOTE_DIR };
	char marker[4096];
	int ret;

	if (!ns)
		return -ENOMEM;
	pthread_mutex_init(&ns->lock, NULL);
	pthread_mutex_init(&ns->store_lock, NULL);
	ns->remote = cfg->remote;
	ns->allow_outside_symlinks = cfg->allow_outside_symlinks;
	ns->ttl_s = cfg->ttl_s;
	ns->uid = cfg->uid;
	ns->gid = cfg->gid;
	ns->next_ino = NS_ROOT_INO;
	ns->source = strdup(cfg->source ? cfg->source : "");
	ns->state_dir = strdup(cfg->state_dir);
	if (!ns->source || !ns->state_dir) {
		ret = -ENOMEM;
		goto err;
	}
	ret = state_dir_prepare(ns->state_dir);
	if (ret)
		goto err;
	root_marker(ns, marker, sizeof(marker));
	clock_gettime(CLOCK_REALTIME, &re.mtime);
	if (ns->remote) {
		struct remote_entry st;

		ret = ns->remote->ops->stat ? ns->remote->ops->stat(ns->remote, "", &st) : -ENOSYS;
		if (!ret) {
			ns->single_file = st.type == REMOTE_FILE;
			re.mtime = st.mtime;
			remote_entry_done(&st);
		}
		if (ns->single_file) {
			int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

			if (fd >= 0)
				close(fd);
		} else {
			unlink(marker);
		}
	} else {
		struct listing l = { .ns = ns, .dir_path = "" };

		ns->single_file = access(marker, F_OK) == 0;
		ret = listing_load(ns, "", &l);
		listing_done(&l);
		if (ret)
			goto err;
	}
	ns->root = node_new(ns, NS_ROOT_INO, "", &re);
	if (!ns->root || table_add(ns, ns->root)) {
		node_free(ns->root);
		ns->root = NULL;
		ret = -ENOMEM;
		goto err;
	}
	ns->root->type = REMOTE_DIR;
	*out = ns;
	return 0;
err:
	namespace_free(ns);
	return ret;
}

void namespace_free(struct namespace *ns)
{
	if (!ns)
		return;
	if (ns->root) {
		struct ns_node *n;
		uint64_t ino = 0;

		namespace_sync(ns);
		while ((n = table_next(ns, &ino)))
			node_free(n);
	}
	for (size_t i = 0; i < ns->nr_pages; i++)
		free(ns->pages[i]);
	free(ns->pages);
	free(ns->source);
	free(ns->state_dir);
	pthread_mutex_destroy(&ns->store_lock);
	pthread_mutex_destroy(&ns->lock);
	free(ns);
}

/* A listing to write, taken under ns->lock and written after it is dropped. */
struct pending_listing {
	uint64_t ino;
	char *path;
	char *text;
	size_t len;
};

int namespace_sync(struct namespace *ns)
{
	struct pending_listing *v = NULL;
	struct ns_node *n;
	size_t nr = 0, cap = 0;
	int ret = 0;

	pthread_mutex_lock(&ns->store_lock);
	pthread_mutex_lock(&ns->lock);
	for (uint64_t ino = 0; (n = table_next(ns, &ino));) {
		struct pending_listing *p;

		if (n->type != REMOTE_DIR || !n->ds->dirty)
			continue;
		if (nr == cap) {
			cap = cap ? cap * 2 : 16;
			p = realloc(v, cap * sizeof(*v));
			if (!p) {
				ret = -ENOMEM;
				break;
			}
			v = p;
		}
		p = &v[nr];
		p->ino = n->ino;
		p->path = strdup(n->path);
		if (!p->path || listing_snapshot(n, &p->text, &p->len)) {
			free(p->path);
			ret = -ENOMEM;
			break;
		}
		n->ds->dirty = false;
		nr++;
	}
	pthread_mutex_unlock(&ns->lock);
	for (size_t i = 0; i < nr; i++) {
		int r = listing_write(ns, v[i].path, v[i].text, v[i].len);

		if (r) {
			pthread_mutex_lock(&ns->lock);
			n = table_find(ns, v[i].ino);
			if (n)
				n->ds->dirty = true;
			pthread_mutex_unlock(&ns->lock);
			ret = ret ? ret : r;
		}
		free(v[i].path);
		free(v[i].text);
	}
	pthread_mutex_unlock(&ns->store_lock);
	free(v);
	return ret;
}

uint64_t namespace_nr_nodes(struct namespace *ns)
{
	uint64_t n;

	pthread_mutex_lock(&ns->lock);
	n = ns->nr_nodes;
	pthread_mutex_unlock(&ns->lock);
	return n;
}

struct ns_node *namespace_get(struct namespace *ns, uint64_t ino)
{
	struct ns_node *n;

	pthread_mutex_lock(&ns->lock);
	n = table_find(ns, ino);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&ns->lock);
	return n;
}

void namespace_put(struct namespace *ns, struct ns_node *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&ns->lock);
	n->refs--;
	node_maybe_free(ns, n);
	pthread_mutex_unlock(&ns->lock);
}

/* Caller holds ns->lock. */
static void stat_locked(struct namespace *ns, struct ns_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = ns->uid;
	st->st_gid = ns->gid;
	switch (n->type) {
	case REMOTE_DIR:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		break;
	case REMOTE_SYMLINK:
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = n->link_target ? (off_t)strlen(n->link_target) : 0;
		break;
	default:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		break;
	}
	if (n->type == REMOTE_FILE)
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_blksize = 1 << 20;
	st->st_mtim = n->mtime;
	st->st_ctim = n->mtime;
	st->st_atim = n->mtime;
}

void namespace_stat(struct namespace *ns, struct ns_node *n, struct stat *st)
{
	pthread_mutex_lock(&ns->lock);
	stat_locked(ns, n, st);
	pthread_mutex_unlock(&ns->lock);
}

enum remote_type namespace_type(struct ns_node *n)
{
	return n->type;
}

uint64_t namespace_ino(struct ns_node *n)
{
	return n->ino;
}

const char *namespace_path(struct ns_node *n)
{
	return n->path;
}

int namespace_lookup(struct namespace *ns, uint64_t parent, const char *name, struct stat *st)
{
	struct ns_node *dir = namespace_get(ns, parent), **found;
	int ret;

	if (!dir)
		return -ESTALE;
	if (dir->type != REMOTE_DIR) {
		ret = -ENOTDIR;
		goto out;
	}
	if (!url_name_is_safe(name, strlen(name))) {
		ret = -ENOENT;
		goto out;
	}
	ret = dir_refresh(ns, dir);
	if (ret)
		goto out;
	pthread_mutex_lock(&ns->lock);
	found = find_child(dir, name);
	if (found) {
		(*found)->nlookup++;
		stat_locked(ns, *found, st);
	} else {
		ret = -ENOENT;
	}
	pthread_mutex_unlock(&ns->lock);
out:
	namespace_put(ns, dir);
	return ret;
}

void namespace_forget(struct namespace *ns, uint64_t ino, uint64_t nlookup)
{
	struct ns_node *n;

	pthread_mutex_lock(&ns->lock);
	n = table_find(ns, ino);
	if (n) {
		n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
		node_maybe_free(ns, n);
	}
	pthread_mutex_unlock(&ns->lock);
}

void namespace_count_lookup(struct namespace *ns, struct ns_node *n)
{
	pthread_mutex_lock(&ns->lock);
	n->nlookup++;
	pthread_mutex_unlock(&ns->lock);
}

int namespace_readlink(struct namespace *ns, struct ns_node *n, char **target)
{
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	if (n->type != REMOTE_SYMLINK)
		ret = -EINVAL;
	else if (!(*target = strdup(n->link_target ? n->link_target : "")))
		ret = -ENOMEM;
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

char *namespace_etag(struct namespace *ns, struct ns_node *n)
{
	char *etag;

	pthread_mutex_lock(&ns->lock);
	etag = n->etag ? strdup(n->etag) : NULL;
	pthread_mutex_unlock(&ns->lock);
	return etag;
}

int namespace_dir_open(struct namespace *ns, uint64_t ino, struct ns_dir **out)
{
	struct ns_node *dir = namespace_get(ns, ino);
	struct ns_dir *d = NULL;
	int ret;

	if (!dir)
		return -ESTALE;
	if (dir->type != REMOTE_DIR) {
		ret = -ENOTDIR;
		goto out;
	}
	ret = dir_refresh(ns, dir);
	if (ret)
		goto out;
	d = calloc(1, sizeof(*d));
	if (!d) {
		ret = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&ns->lock);
	d->ino = dir->ino;
	d->parent_ino = dir->parent_ino;
	d->entries = calloc(dir->ds->nr_children ? dir->ds->nr_children : 1, sizeof(*d->entries));
	if (d->entries) {
		d->nr_entries = dir->ds->nr_children;
		for (size_t i = 0; i < dir->ds->nr_children; i++) {
			d->entries[i].node = dir->ds->children[i];
			d->entries[i].name = node_name(dir->ds->children[i]);
			dir->ds->children[i]->refs++;
		}
	}
	pthread_mutex_unlock(&ns->lock);
	if (!d->entries) {
		free(d);
		d = NULL;
		ret = -ENOMEM;
	}
out:
	namespace_put(ns, dir);
	*out = d;
	return ret;
}

void namespace_dir_free(struct namespace *ns, struct ns_dir *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&ns->lock);
	for (size_t i = 0; i < d->nr_entries; i++) {
		d->entries[i].node->refs--;
		node_maybe_free(ns, d->entries[i].node);
	}
	pthread_mutex_unlock(&ns->lock);
	free(d->entries);
	free(d);
}

static char *version_of(const char *etag, const struct timespec *mtime)
{
	char *v;

	if (etag)
		return strdup(etag);
	if (asprintf(&v, "%lld.%09ld", (long long)mtime->tv_sec, mtime->tv_nsec) < 0)
		return NULL;
	return v;
}

/* The object of file n; opening: this is an open of n, which decides keep_cache. */
static int object_of(struct namespace *ns, struct ns_node *n, struct ns_object *out, bool opening)
{
	bool need_stat;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (n->type != REMOTE_FILE)
		return n->type == REMOTE_DIR ? -EISDIR : -ELOOP;
	pthread_mutex_lock(&ns->lock);
	need_stat = ns->remote && !n->etag && !n->version_checked;
	pthread_mutex_unlock(&ns->lock);
	if (need_stat) {
		struct remote_entry e;

		/* The listing had no ETag (autoindex, local trees): ask for the object's own
		 * version once, so fetches are pinned to it. */
		ret = ns->remote->ops->stat(ns->remote, n->path, &e);
		if (!ret && !remote_etag_is_version(e.etag)) {
			free(e.etag);
			e.etag = NULL;
		}
		pthread_mutex_lock(&ns->lock);
		if (!ret && e.type == REMOTE_FILE) {
			if (!same_version(n, &e)) {
				struct ns_node *parent = table_find(ns, n->parent_ino);

				n->size = e.size;
				n->mtime = e.mtime;
				set_str(&n->etag, e.etag);
				if (parent && parent->type == REMOTE_DIR)
					parent->ds->dirty = true;
			}
			n->version_checked = true;
		} else if (ret == -ENOENT || (!ret && e.type != REMOTE_FILE)) {
			pthread_mutex_unlock(&ns->lock);
			if (!ret)
				remote_entry_done(&e);
			return -ENOENT;
		} else {
			/* Unreachable: serve what the listing said; the fetch checks it. */
			log_debug("cannot stat '/%s' (%s); using the listing's version", n->path,
				strerror(-ret));
		}
		pthread_mutex_unlock(&ns->lock);
		if (!ret)
			remote_entry_done(&e);
		ret = 0;
	}
	pthread_mutex_lock(&ns->lock);
	out->obj.size = n->size;
	out->obj.mtime = n->mtime;
	out->obj.path = strdup(n->path);
	out->obj.etag = n->etag ? strdup(n->etag) : NULL;
	out->version = version_of(n->etag, &n->mtime);
	if (!out->obj.path || (n->etag && !out->obj.etag) || !out->version) {
		ret = -ENOMEM;
	} else if (opening) {
		out->keep_cache =
			n->last_open_version && !strcmp(n->last_open_version, out->version);
		set_str(&n->last_open_version, out->version);
	}
	pthread_mutex_unlock(&ns->lock);
	if (ret)
		namespace_object_done(out);
	return ret;
}

int namespace_open_object(struct namespace *ns, struct ns_node *n, struct ns_object *out)
{
	return object_of(ns, n, out, true);
}

int namespace_peek_object(struct namespace *ns, struct ns_node *n, struct ns_object *out)
{
	return object_of(ns, n, out, false);
}

int namespace_position(struct namespace *ns, struct ns_node *n, uint64_t *parent_ino, size_t *index)
{
	struct ns_node *dir, **c;
	int ret = -ENOENT;

	pthread_mutex_lock(&ns->lock);
	dir = n->linked ? table_find(ns, n->parent_ino) : NULL;
	if (dir && dir->type == REMOTE_DIR && (c = find_child(dir, node_name(n))) && *c == n) {
		*parent_ino = dir->ino;
		*index = (size_t)(c - dir->ds->children);
		ret = 0;
	}
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

size_t namespace_files_from(struct namespace *ns, uint64_t dir_ino, size_t from, size_t span,
	struct ns_file *out)
{
	struct ns_node *dir;
	size_t nr = 0;

	pthread_mutex_lock(&ns->lock);
	dir = table_find(ns, dir_ino);
	for (size_t i = from;
		dir && dir->type == REMOTE_DIR && i < dir->ds->nr_children && i - from < span;
		i++) {
		const struct ns_node *c = dir->ds->children[i];

		if (c->type != REMOTE_FILE)
			continue;
		out[nr++] = (struct ns_file){ .ino = c->ino, .size = c->size, .index = i };
	}
	pthread_mutex_unlock(&ns->lock);
	return nr;
}

void namespace_object_done(struct ns_object *o)
{
	if (!o)
		return;
	free((char *)o->obj.path);
	free((char *)o->obj.etag);
	free(o->version);
	memset(o, 0, sizeof(*o));
}
