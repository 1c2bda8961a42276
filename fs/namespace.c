/* The namespace: inode table and lazily listed directories between the FUSE operations and
 * the remote backend; listings are also written to the cache directory (manifest format) so
 * that a remount with the source unreachable still lists what was seen. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
/* What only a directory has: its path and its listing. list_lock serialises listers of the
 * directory (held without ns->lock while the remote is asked; never taken while holding
 * ns->lock); path never changes; the rest is protected by ns->lock. */
struct ns_dirstate {
	pthread_mutex_t list_lock;
	char *path; /* the remote path, "" for the root */
	char *etag;
	/* The listing, sorted by name: nodes of inos first_ino .. first_ino + nr_children - 1
	 * when children is NULL, else those of children. A first listing makes its nodes in
	 * order, so at ten million entries no array of 8 bytes each is kept; a relist that
	 * keeps some nodes of the one before needs the array (child_at). */
	struct ns_node **children;
	uint64_t first_ino;
	size_t nr_children;
	/* Live nodes whose parent this is, linked or not: a file's path is built from its
	 * parent's, so a directory outlives each of its nodes (node_maybe_free). */
	size_t nr_kids;
	bool listed;
	bool dirty; /* the kept listing is older than children: in ns->dirty */
	struct ns_dirstate *dirty_prev, *dirty_next;
	struct ns_node *node;      /* the directory's own */
	struct timespec listed_at; /* CLOCK_MONOTONIC */
};

/* What a file or symlink has besides what every node has; NULL until one of them is set. */
struct ns_extra {
	char *etag;
	char *aux; /* REMOTE_FILE: version at the previous open (keep_cache); SYMLINK: target */
};

/* Names this long or shorter (with their NUL) are kept in the node itself. */
#define NS_NAME_INLINE 12

/* One file, directory or symlink. There is one per entry seen, ten million of them for a big
 * dataset, so a node is 56 bytes in a slot of the inode table (no allocation of its own, and
 * its ino is where it sits), the name is in the node when it is short, and only a directory
 * keeps its path: a file's is its parent's path and its name (node_path).
 * parent_ino, type and the name never change after creation (a relist that changes an entry's
 * type makes a new node). Everything else is protected by ns->lock.
 * A node lives while it is linked in its parent's listing, the kernel holds lookups on it
 * (nlookup), someone holds a temporary reference (refs), or, for a directory, one of its
 * nodes lives (ds->nr_kids); the root lives until namespace_free. */
struct ns_node {
	uint64_t parent_ino;
	uint64_t size;
	int64_t mtime_sec;
	union {
		struct ns_extra *x;     /* REMOTE_FILE, REMOTE_SYMLINK: may be NULL */
		struct ns_dirstate *ds; /* REMOTE_DIR: never NULL */
	};
	uint32_t mtime_nsec : 30;
	uint32_t type : 2; /* enum remote_type */
	/* Sticks at its maximum: a node looked up 4 billion times is never freed, rather than
	 * freed while the kernel still knows it. */
	uint32_t nlookup;
	uint32_t refs : 27;
	uint32_t live : 1; /* the slot holds a node */
	uint32_t linked : 1;
	uint32_t kept : 1;            /* scratch of listing_merge: reused by the new listing */
	uint32_t version_checked : 1; /* stat'ed since the last listing */
	uint32_t name_heap : 1;       /* name holds a pointer to the name, not the name */
	char name[NS_NAME_INLINE];
};

_Static_assert(sizeof(struct ns_node) == 56, "a node grew: ten million of them are in memory");

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
	/* The directories whose kept listing is out of date, for namespace_sync: walking the
	 * table for them each second read ten million nodes under the lock. */
	struct ns_dirstate *dirty;
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
	const char *p;

	if (!n->name_heap)
		return n->name;
	memcpy(&p, n->name, sizeof(p));
	return p;
}

static struct timespec node_mtime(const struct ns_node *n)
{
	return (struct timespec){ .tv_sec = (time_t)n->mtime_sec, .tv_nsec = n->mtime_nsec };
}

static void node_set_mtime(struct ns_node *n, const struct timespec *t)
{
	n->mtime_sec = t->tv_sec;
	n->mtime_nsec = (uint32_t)t->tv_nsec & ((1u << 30) - 1);
}

static const char *node_etag(const struct ns_node *n)
{
	if (n->type == REMOTE_DIR)
		return n->ds->etag;
	return n->x ? n->x->etag : NULL;
}

static const char *node_aux(const struct ns_node *n)
{
	return n->type != REMOTE_DIR && n->x ? n->x->aux : NULL;
}

/* The symlink's target ("" when there is none). */
static const char *node_link_target(const struct ns_node *n)
{
	const char *t = node_aux(n);

	return t ? t : "";
}

/* Replaces *dst by a copy of src (NULL: none); -ENOMEM leaves NULL. */
static int set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? strdup(src) : NULL;
	return src && !*dst ? -ENOMEM : 0;
}

static char **node_slot(struct ns_node *n, bool etag, bool want)
{
	if (n->type == REMOTE_DIR)
		return etag ? &n->ds->etag : NULL;
	if (!n->x && (!want || !(n->x = calloc(1, sizeof(*n->x)))))
		return NULL;
	return etag ? &n->x->etag : &n->x->aux;
}

static int node_set_etag(struct ns_node *n, const char *etag)
{
	char **slot = node_slot(n, true, etag != NULL);

	if (!slot)
		return etag ? -ENOMEM : 0;
	return set_str(slot, etag);
}

static int node_set_aux(struct ns_node *n, const char *aux)
{
	char **slot = node_slot(n, false, aux != NULL);

	if (!slot)
		return aux ? -ENOMEM : 0;
	return set_str(slot, aux);
}

static void node_count_lookup(struct ns_node *n)
{
	if (n->nlookup != UINT32_MAX)
		n->nlookup++;
}

/* ---- inode table (callers hold ns->lock) ---- */

/* Inode numbers are handed out in order and never reused, so one number never names two
 * entries, and the table is an array of nodes indexed by them, in pages so that it grows
 * without moving. A page is NS_PAGE_BYTES, aligned to its size, so a node's ino follows from
 * its address. Pages come from mmap: malloc would round each up or keep the alignment's
 * slack. A page whose nodes are all gone is unmapped. */
#define NS_PAGE_BYTES ((size_t)1 << 18)

struct ns_page {
	uint64_t first_ino;
	size_t nr_live;
	struct ns_node nodes[];
};

#define NS_PAGE_NODES ((NS_PAGE_BYTES - sizeof(struct ns_page)) / sizeof(struct ns_node))

static struct ns_page *page_new(uint64_t first_ino)
{
	char *p = mmap(NULL, 2 * NS_PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		-1, 0);
	uintptr_t at, end;

	if (p == MAP_FAILED)
		return NULL;
	/* Mapped twice the size, then trimmed to the aligned page inside. */
	at = ((uintptr_t)p + NS_PAGE_BYTES - 1) & ~(uintptr_t)(NS_PAGE_BYTES - 1);
	end = (uintptr_t)p + 2 * NS_PAGE_BYTES;
	if (at > (uintptr_t)p)
		munmap(p, at - (uintptr_t)p);
	if (end > at + NS_PAGE_BYTES)
		munmap((void *)(at + NS_PAGE_BYTES), end - at - NS_PAGE_BYTES);
	((struct ns_page *)at)->first_ino = first_ino;
	return (struct ns_page *)at;
}

static void page_free(struct ns_page *page)
{
	if (page)
		munmap(page, NS_PAGE_BYTES);
}

static uint64_t node_ino(const struct ns_node *n)
{
	const struct ns_page *page =
		(const struct ns_page *)((uintptr_t)n & ~(uintptr_t)(NS_PAGE_BYTES - 1));

	return page->first_ino + (uint64_t)(n - page->nodes);
}

static struct ns_node *table_find(struct namespace *ns, uint64_t ino)
{
	size_t p = (size_t)(ino / NS_PAGE_NODES);
	struct ns_node *n;

	if (p >= ns->nr_pages || !ns->pages[p])
		return NULL;
	n = &ns->pages[p]->nodes[ino % NS_PAGE_NODES];
	return n->live ? n : NULL;
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
		n = &page->nodes[(*ino)++ % NS_PAGE_NODES];
		if (n->live)
			return n;
	}
	return NULL;
}

/* A zeroed live node at the next ino. */
static struct ns_node *table_add(struct namespace *ns)
{
	size_t p = (size_t)(ns->next_ino / NS_PAGE_NODES);
	struct ns_node *n;

	if (p >= ns->nr_pages) {
		size_t nr = ns->nr_pages ? ns->nr_pages * 2 : 16;
		struct ns_page **v = realloc(ns->pages, nr * sizeof(*v));

		if (!v)
			return NULL;
		memset(v + ns->nr_pages, 0, (nr - ns->nr_pages) * sizeof(*v));
		ns->pages = v;
		ns->nr_pages = nr;
	}
	if (!ns->pages[p] && !(ns->pages[p] = page_new((uint64_t)p * NS_PAGE_NODES)))
		return NULL;
	n = &ns->pages[p]->nodes[ns->next_ino++ % NS_PAGE_NODES];
	n->live = true;
	ns->pages[p]->nr_live++;
	ns->nr_nodes++;
	return n;
}

static void table_remove(struct namespace *ns, struct ns_node *n)
{
	uint64_t ino = node_ino(n);
	size_t p = (size_t)(ino / NS_PAGE_NODES);
	struct ns_page *page = ns->pages[p];

	memset(n, 0, sizeof(*n));
	/* The page that next_ino is filling stays, or the next node would map it again. */
	if (!--page->nr_live && p != ns->next_ino / NS_PAGE_NODES) {
		page_free(page);
		ns->pages[p] = NULL;
	}
	ns->nr_nodes--;
}

static void dir_mark_dirty(struct namespace *ns, struct ns_dirstate *ds)
{
	if (ds->dirty)
		return;
	ds->dirty = true;
	ds->dirty_prev = NULL;
	ds->dirty_next = ns->dirty;
	if (ns->dirty)
		ns->dirty->dirty_prev = ds;
	ns->dirty = ds;
}

static void dir_clear_dirty(struct namespace *ns, struct ns_dirstate *ds)
{
	if (!ds->dirty)
		return;
	ds->dirty = false;
	if (ds->dirty_prev)
		ds->dirty_prev->dirty_next = ds->dirty_next;
	else
		ns->dirty = ds->dirty_next;
	if (ds->dirty_next)
		ds->dirty_next->dirty_prev = ds->dirty_prev;
	ds->dirty_prev = ds->dirty_next = NULL;
}

/* Frees what n owns; its slot stays (namespace_free) or is cleared by table_remove. */
static void node_done(struct namespace *ns, struct ns_node *n)
{
	if (n->name_heap)
		free((char *)node_name(n));
	if (n->type == REMOTE_DIR && n->ds) {
		dir_clear_dirty(ns, n->ds);
		pthread_mutex_destroy(&n->ds->list_lock);
		free(n->ds->path);
		free(n->ds->etag);
		free(n->ds->children);
		free(n->ds);
	} else if (n->type != REMOTE_DIR && n->x) {
		free(n->x->etag);
		free(n->x->aux);
		free(n->x);
	}
}

/* The node at index i of a directory's listing (i < nr_children). */
static struct ns_node *child_at(struct namespace *ns, const struct ns_dirstate *ds, size_t i)
{
	return ds->children ? ds->children[i] : table_find(ns, ds->first_ino + i);
}

static void node_maybe_free(struct namespace *ns, struct ns_node *n);

/* Empties a directory's listing: its nodes are unlinked, and freed unless held or kept (by
 * listing_merge, which clears kept). */
static void unlink_listing(struct namespace *ns, struct ns_dirstate *ds)
{
	struct ns_node **kids = ds->children;
	uint64_t first = ds->first_ino;
	size_t nr = ds->nr_children;

	ds->children = NULL;
	ds->nr_children = 0;
	for (size_t i = 0; i < nr; i++) {
		struct ns_node *c = kids ? kids[i] : table_find(ns, first + i);

		if (c->kept) {
			c->kept = false;
			continue;
		}
		c->linked = false;
		node_maybe_free(ns, c);
	}
	free(kids);
}

static void node_maybe_free(struct namespace *ns, struct ns_node *n)
{
	struct ns_node *parent;

	if (n == ns->root || n->linked || n->nlookup || n->refs)
		return;
	if (n->type == REMOTE_DIR && n->ds->nr_children) {
		/* The listing goes: its nodes are unlinked (and freed unless held). The
		 * count held here keeps n while they go, since each one freed looks at n. */
		n->ds->nr_kids++;
		unlink_listing(ns, n->ds);
		n->ds->listed = false;
		n->ds->nr_kids--;
	}
	if (n->type == REMOTE_DIR && n->ds->nr_kids)
		return; /* a node of it still lives, and its path is built from n's */
	parent = table_find(ns, n->parent_ino);
	node_done(ns, n);
	table_remove(ns, n);
	if (parent && parent->type == REMOTE_DIR) {
		parent->ds->nr_kids--;
		node_maybe_free(ns, parent);
	}
}

/* Drops nodes from a listing being replaced: unlinked, freed unless held. */
static void unlink_nodes(struct namespace *ns, struct ns_node **nodes, size_t nr)
{
	for (size_t i = 0; i < nr; i++) {
		if (nodes[i]->kept) {
			nodes[i]->kept = false;
			continue;
		}
		nodes[i]->linked = false;
		node_maybe_free(ns, nodes[i]);
	}
}

/* The remote path of n, newly allocated: a directory's own, else its parent's path and its
 * name; "" for a single-file source's file. Caller holds ns->lock. */
static char *node_path(struct namespace *ns, struct ns_node *n)
{
	struct ns_node *parent;
	const char *dir;
	char *p;

	if (n->type == REMOTE_DIR)
		return strdup(n->ds->path);
	if (ns->single_file)
		return strdup("");
	parent = table_find(ns, n->parent_ino);
	dir = parent && parent->type == REMOTE_DIR ? parent->ds->path : "";
	if (asprintf(&p, "%s%s%s", dir, *dir ? "/" : "", node_name(n)) < 0)
		return NULL;
	return p;
}

/* A new node for e in directory parent (NULL for the root), in the table. Caller holds
 * ns->lock. */
static struct ns_node *node_new(struct namespace *ns, struct ns_node *parent,
	const struct remote_entry *e)
{
	size_t name_bytes = strlen(e->name) + 1;
	struct ns_node *n = table_add(ns);

	if (!n)
		return NULL;
	if (name_bytes <= NS_NAME_INLINE) {
		memcpy(n->name, e->name, name_bytes);
	} else {
		char *heap = strdup(e->name);

		if (!heap)
			goto err;
		memcpy(n->name, &heap, sizeof(heap));
		n->name_heap = true;
	}
	n->parent_ino = parent ? node_ino(parent) : NS_ROOT_INO;
	n->type = e->type;
	n->size = e->size;
	node_set_mtime(n, &e->mtime);
	if (n->type == REMOTE_DIR) {
		const char *dir = parent ? parent->ds->path : "";

		n->ds = calloc(1, sizeof(*n->ds));
		if (!n->ds)
			goto err;
		pthread_mutex_init(&n->ds->list_lock, NULL);
		n->ds->node = n;
		if (!parent)
			n->ds->path = strdup("");
		else if (asprintf(&n->ds->path, "%s%s%s", dir, *dir ? "/" : "", e->name) < 0)
			n->ds->path = NULL;
		if (!n->ds->path)
			goto err;
	}
	if (node_set_etag(n, e->etag) ||
		(n->type == REMOTE_SYMLINK &&
			node_set_aux(n, e->link_target ? e->link_target : "")))
		goto err;
	if (parent)
		parent->ds->nr_kids++;
	return n;
err:
	node_done(ns, n);
	table_remove(ns, n);
	return NULL;
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

/* The node named name in dir's listing and its index there, or NULL. Caller holds ns->lock. */
static struct ns_node *find_child(struct namespace *ns, struct ns_node *dir, const char *name,
	size_t *index)
{
	size_t lo = 0, hi = dir->ds->nr_children;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct ns_node *c = child_at(ns, dir->ds, mid);
		int cmp = strcmp(name, node_name(c));

		if (!cmp) {
			if (index)
				*index = mid;
			return c;
		}
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
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
static int listing_snapshot(struct namespace *ns, struct ns_node *dir, char **text, size_t *len)
{
	FILE *f = open_memstream(text, len);
	int ret;

	if (!f)
		return -ENOMEM;
	ret = manifest_write_header(f);
	for (size_t i = 0; !ret && i < dir->ds->nr_children; i++) {
		struct ns_node *c = child_at(ns, dir->ds, i);
		struct remote_entry e = {
			.type = c->type,
			.size = c->size,
			.mtime = node_mtime(c),
			.etag = (char *)node_etag(c),
			.link_target =
				c->type == REMOTE_SYMLINK ? (char *)node_link_target(c) : NULL,
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

/* A kept listing is written in two steps, so that a pass over many pays for one journal
 * commit, not one each (ext4 commits all files written so far at the first fsync; the others'
 * are then cheap): listing_write_tmp writes the text to a temporary file made 0600 whatever
 * the umask, listing_commit fsyncs it and renames it over the old one, and the pass ends with
 * one fsync of the directory. A crash leaves the old file or the new one, never a torn one.
 * Callers hold ns->store_lock, not ns->lock (the disk is slow; lookups go on). */
struct listing_file_pair {
	char *tmp, *file;
	char *dir_path;
};

static void listing_pair_done(struct listing_file_pair *f)
{
	free(f->tmp);
	free(f->file);
	free(f->dir_path);
	memset(f, 0, sizeof(*f));
}

static void listing_warn(struct namespace *ns, const char *dir_path, int err)
{
	log_warn("cannot keep the listing of '/%s' in %s: %s", dir_path, ns->state_dir,
		strerror(-err));
}

/* The pair is filled (and the caller's to free) on success only. */
static int listing_write_tmp(struct namespace *ns, const char *dir_path, const char *text,
	size_t len, struct listing_file_pair *out)
{
	struct listing_file_pair f = { .file = listing_file(ns, dir_path),
		.dir_path = strdup(dir_path) };
	int fd, ret;

	if (!f.file || !f.dir_path || asprintf(&f.tmp, "%s.tmp.%d", f.file, (int)gettid()) < 0) {
		f.tmp = NULL;
		ret = -ENOMEM;
		goto out;
	}
	unlink(f.tmp); /* one left by a crash of a thread with this id */
	fd = open(f.tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = fchmod(fd, 0600) ? -errno : 0;
	if (!ret)
		ret = write_all(fd, text, len);
	if (close(fd) && !ret)
		ret = -errno;
	if (ret)
		unlink(f.tmp);
out:
	if (ret) {
		listing_warn(ns, dir_path, ret);
		listing_pair_done(&f);
	} else {
		*out = f;
	}
	return ret;
}

static int listing_commit(struct namespace *ns, struct listing_file_pair *f)
{
	int fd = open(f->tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret = 0;

	if (fd < 0 || fsync(fd))
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (!ret && rename(f->tmp, f->file))
		ret = -errno;
	if (ret) {
		unlink(f->tmp);
		listing_warn(ns, f->dir_path, ret);
	}
	return ret;
}

static void state_dir_fsync(struct namespace *ns)
{
	int fd = open(ns->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static bool same_version(const struct ns_node *n, const struct remote_entry *e)
{
	const char *etag = node_etag(n);

	return n->size == e->size && n->mtime_sec == e->mtime.tv_sec &&
	       n->mtime_nsec == e->mtime.tv_nsec &&
	       ((!etag && !e->etag) || (etag && e->etag && !strcmp(etag, e->etag)));
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
		struct ns_node *old, *n;

		/* Duplicates (an S3 key next to a prefix of the same name): the first wins. */
		if (nr && !strcmp(node_name(kids[nr - 1]), e->name))
			continue;
		old = find_child(ns, dir, e->name, NULL);
		if (old && old->type == e->type) {
			n = old;
			if (!same_version(n, e)) {
				n->size = e->size;
				node_set_mtime(n, &e->mtime);
				node_set_etag(n, e->etag); /* out of memory: no ETag */
			}
			if (n->type == REMOTE_SYMLINK)
				node_set_aux(n, e->link_target);
			n->version_checked = false;
			n->kept = true;
		} else {
			n = node_new(ns, dir, e);
			if (!n) {
				/* Undo: the old listing stays, the new nodes go. */
				unlink_nodes(ns, kids, nr);
				free(kids);
				return -ENOMEM;
			}
		}
		n->linked = true;
		kids[nr++] = n;
	}
	unlink_listing(ns, dir->ds);
	dir->ds->nr_children = nr;
	dir->ds->first_ino = nr ? node_ino(kids[0]) : 0;
	for (size_t i = 1; i < nr && kids; i++) {
		if (node_ino(kids[i]) != dir->ds->first_ino + i) {
			struct ns_node **v = realloc(kids, nr * sizeof(*kids));

			dir->ds->children = v ? v : kids;
			kids = NULL;
		}
	}
	free(kids); /* NULL when the array is kept */
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

/* Makes dir's listing fresh: from the remote when online (kept on disk at the next sync; on
 * failure the previous listing, or the kept one, is served with a warning), from the kept
 * listing when offline. Takes dir->ds->list_lock; caller holds a reference on dir but not
 * ns->lock. */
static int dir_refresh(struct namespace *ns, struct ns_node *dir)
{
	struct listing l = { .ns = ns, .dir_path = dir->ds->path };
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
			ret = ns->remote->ops->list(ns->remote, dir->ds->path, listing_add, &l);
		if (!ret) {
			if (l.nr_unsafe)
				log_warn("skipped %zu unsafe name%s in '/%s' (such as '%s')",
					l.nr_unsafe, l.nr_unsafe > 1 ? "s" : "", dir->ds->path,
					l.first_unsafe ? l.first_unsafe : "");
			/* Kept on disk by the next namespace_sync (the daemon's syncer, or the
			 * unmount): a lister does not wait for an fsync, which at a thousand
			 * directories was seconds of a `find`. */
			pthread_mutex_lock(&ns->lock);
			ret = listing_merge(ns, dir, &l);
			if (!ret)
				dir_mark_dirty(ns, dir->ds);
			pthread_mutex_unlock(&ns->lock);
			goto out;
		}
		listing_done(&l);
		pthread_mutex_lock(&ns->lock);
		if (dir->ds->listed) {
			/* Keep serving the old listing; try again after another ttl. */
			log_warn("cannot list '/%s' again (%s); keeping the previous listing",
				dir->ds->path, strerror(-ret));
			clock_gettime(CLOCK_MONOTONIC, &dir->ds->listed_at);
			ret = 0;
			pthread_mutex_unlock(&ns->lock);
			goto out;
		}
		pthread_mutex_unlock(&ns->lock);
		log_warn("cannot list '/%s': %s", dir->ds->path, strerror(-ret));
	}
	ret = listing_load(ns, dir->ds->path, &l);
	if (ret) {
		if (ret == -ENOENT && !ns->remote)
			log_warn("'/%s' was never listed while online; it is empty offline",
				dir->ds->path);
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
	ns->root = node_new(ns, NULL, &re);
	if (!ns->root) {
		ret = -ENOMEM;
		goto err;
	}
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
			node_done(ns, n);
	}
	for (size_t i = 0; i < ns->nr_pages; i++)
		page_free(ns->pages[i]);
	free(ns->pages);
	free(ns->source);
	free(ns->state_dir);
	pthread_mutex_destroy(&ns->store_lock);
	pthread_mutex_destroy(&ns->lock);
	free(ns);
}

/* One snapshot at a time: a snapshot of the 100,000-entry directory is megabytes, and the
 * syncer's malloc arena kept what a batch of them took (100 MiB more RSS at ten million
 * files); what it took is given back after. Each is written to its temporary file at once,
 * and all are committed at the end (listing_write_tmp). A listing that cannot be written is
 * marked dirty again after the pass, so that one pass never retries it. */
int namespace_sync(struct namespace *ns)
{
	struct listing_file_pair *files = NULL;
	uint64_t *inos = NULL;
	size_t nr = 0, cap = 0;
	int ret = 0;

	pthread_mutex_lock(&ns->store_lock);
	for (;;) {
		struct ns_node *n;
		char *path = NULL, *text = NULL;
		size_t len = 0;
		int r;

		if (nr == cap) {
			size_t c = cap ? cap * 2 : 16;
			struct listing_file_pair *f = realloc(files, c * sizeof(*f));
			uint64_t *v = f ? realloc(inos, c * sizeof(*v)) : NULL;

			if (f)
				files = f;
			if (!v) {
				ret = -ENOMEM;
				break;
			}
			inos = v;
			cap = c;
		}
		pthread_mutex_lock(&ns->lock);
		if (!ns->dirty) {
			pthread_mutex_unlock(&ns->lock);
			break;
		}
		n = ns->dirty->node;
		inos[nr] = node_ino(n);
		path = strdup(n->ds->path);
		r = path ? listing_snapshot(ns, n, &text, &len) : -ENOMEM;
		if (!r)
			dir_clear_dirty(ns, n->ds);
		pthread_mutex_unlock(&ns->lock);
		if (!r)
			r = listing_write_tmp(ns, path, text, len, &files[nr]);
		free(path);
		free(text);
		if (r) {
			ret = ret ? ret : r;
			memset(&files[nr], 0, sizeof(files[nr])); /* no file: marked dirty again */
		}
		nr++;
		if (r == -ENOMEM)
			break;
	}
	for (size_t i = 0; i < nr; i++) {
		if (files[i].tmp && listing_commit(ns, &files[i])) {
			ret = ret ? ret : -EIO;
			listing_pair_done(&files[i]);
		}
	}
	if (nr)
		state_dir_fsync(ns);
	pthread_mutex_lock(&ns->lock);
	for (size_t i = 0; i < nr; i++) {
		struct ns_node *n = files[i].tmp ? NULL : table_find(ns, inos[i]);

		if (n)
			dir_mark_dirty(ns, n->ds);
		listing_pair_done(&files[i]);
	}
	pthread_mutex_unlock(&ns->lock);
	pthread_mutex_unlock(&ns->store_lock);
	free(files);
	free(inos);
	if (nr)
		malloc_trim(0);
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
	st->st_ino = node_ino(n);
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
		st->st_size = (off_t)strlen(node_link_target(n));
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
	st->st_mtim = node_mtime(n);
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
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
	return node_ino(n);
}

char *namespace_path(struct namespace *ns, struct ns_node *n)
{
	char *p;

	pthread_mutex_lock(&ns->lock);
	p = node_path(ns, n);
	pthread_mutex_unlock(&ns->lock);
	return p;
}

int namespace_lookup(struct namespace *ns, uint64_t parent, const char *name, struct stat *st)
{
	struct ns_node *dir = namespace_get(ns, parent), *found;
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
	found = find_child(ns, dir, name, NULL);
	if (found) {
		node_count_lookup(found);
		stat_locked(ns, found, st);
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
		if (n->nlookup != UINT32_MAX) /* stuck: see struct ns_node */
			n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - (uint32_t)nlookup;
		node_maybe_free(ns, n);
	}
	pthread_mutex_unlock(&ns->lock);
}

void namespace_count_lookup(struct namespace *ns, struct ns_node *n)
{
	pthread_mutex_lock(&ns->lock);
	node_count_lookup(n);
	pthread_mutex_unlock(&ns->lock);
}

int namespace_readlink(struct namespace *ns, struct ns_node *n, char **target)
{
	int ret = 0;

	pthread_mutex_lock(&ns->lock);
	if (n->type != REMOTE_SYMLINK)
		ret = -EINVAL;
	else if (!(*target = strdup(node_link_target(n))))
		ret = -ENOMEM;
	pthread_mutex_unlock(&ns->lock);
	return ret;
}

char *namespace_etag(struct namespace *ns, struct ns_node *n)
{
	char *etag;

	pthread_mutex_lock(&ns->lock);
	etag = node_etag(n) ? strdup(node_etag(n)) : NULL;
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
	d->ino = node_ino(dir);
	d->parent_ino = dir->parent_ino;
	d->entries = calloc(dir->ds->nr_children ? dir->ds->nr_children : 1, sizeof(*d->entries));
	if (d->entries) {
		d->nr_entries = dir->ds->nr_children;
		for (size_t i = 0; i < dir->ds->nr_children; i++) {
			struct ns_node *c = child_at(ns, dir->ds, i);

			d->entries[i].node = c;
			d->entries[i].name = node_name(c);
			c->refs++;
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
	struct timespec mtime;
	const char *etag;
	bool need_stat;
	char *path;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (n->type != REMOTE_FILE)
		return n->type == REMOTE_DIR ? -EISDIR : -ELOOP;
	pthread_mutex_lock(&ns->lock);
	need_stat = ns->remote && !node_etag(n) && !n->version_checked;
	path = node_path(ns, n);
	pthread_mutex_unlock(&ns->lock);
	if (!path)
		return -ENOMEM;
	if (need_stat) {
		struct remote_entry e;

		/* The listing had no ETag (autoindex, local trees): ask for the object's own
		 * version once, so fetches are pinned to it. */
		ret = ns->remote->ops->stat(ns->remote, path, &e);
		if (!ret && !remote_etag_is_version(e.etag)) {
			free(e.etag);
			e.etag = NULL;
		}
		pthread_mutex_lock(&ns->lock);
		if (!ret && e.type == REMOTE_FILE) {
			if (!same_version(n, &e)) {
				struct ns_node *parent = table_find(ns, n->parent_ino);

				n->size = e.size;
				node_set_mtime(n, &e.mtime);
				node_set_etag(n, e.etag); /* out of memory: no ETag */
				if (parent && parent->type == REMOTE_DIR)
					dir_mark_dirty(ns, parent->ds);
			}
			n->version_checked = true;
		} else if (ret == -ENOENT || (!ret && e.type != REMOTE_FILE)) {
			pthread_mutex_unlock(&ns->lock);
			if (!ret)
				remote_entry_done(&e);
			free(path);
			return -ENOENT;
		} else {
			/* Unreachable: serve what the listing said; the fetch checks it. */
			log_debug("cannot stat '/%s' (%s); using the listing's version", path,
				strerror(-ret));
		}
		pthread_mutex_unlock(&ns->lock);
		if (!ret)
			remote_entry_done(&e);
		ret = 0;
	}
	pthread_mutex_lock(&ns->lock);
	mtime = node_mtime(n);
	etag = node_etag(n);
	out->obj.size = n->size;
	out->obj.mtime = mtime;
	out->obj.path = path;
	out->obj.etag = etag ? strdup(etag) : NULL;
	out->version = version_of(etag, &mtime);
	if ((etag && !out->obj.etag) || !out->version) {
		ret = -ENOMEM;
	} else if (opening) {
		const char *last = node_aux(n);

		out->keep_cache = last && !strcmp(last, out->version);
		if (node_set_aux(n, out->version))
			out->keep_cache = false; /* no record of this open: the next cannot keep */
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
	struct ns_node *dir;
	int ret = -ENOENT;

	pthread_mutex_lock(&ns->lock);
	dir = n->linked ? table_find(ns, n->parent_ino) : NULL;
	if (dir && dir->type == REMOTE_DIR && find_child(ns, dir, node_name(n), index) == n) {
		*parent_ino = node_ino(dir);
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
		const struct ns_node *c = child_at(ns, dir->ds, i);

		if (c->type != REMOTE_FILE)
			continue;
		out[nr++] = (struct ns_file){ .ino = node_ino(c), .size = c->size, .index = i };
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
