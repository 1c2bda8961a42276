/* The namespace of a mount: inode numbers for remote paths, lazily listed directories with a
 * time to live, kept in the cache directory so a remount with the source down still lists.
 * The FUSE operations (fuse_ops.c) are its only user; remotes are reached through remote.h. */
#ifndef FERRY_NAMESPACE_H
#define FERRY_NAMESPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs/remote/remote.h"

#define NS_ROOT_INO 1

struct namespace;
struct ns_node;

struct namespace_config {
	struct remote *remote; /* NULL when offline */
	const char *source;    /* for building remote names in messages */
	const char *state_dir; /* where listings are kept (created if missing) */
	double ttl_s;          /* listings are re-fetched after this; < 0: never */
	uid_t uid;
	gid_t gid;
	/* Symlinks whose target is absolute or leaves the mount are hidden (not listed, one
	 * warning per mount) unless this is set: a remote must not point local readers at
	 * local files. */
	bool allow_outside_symlinks;
};

/* Opens the namespace. Online, stats the source root (a single-file source becomes a
 * directory holding that one file); offline, needs a listing of the root kept by an earlier
 * mount: -ENOENT otherwise. */
int namespace_new(struct namespace **out, const struct namespace_config *cfg);
void namespace_free(struct namespace *ns);
/* Writes the listings that changed since the last call: one file per directory, mode 0600,
 * written atomically (temporary file, fsync, rename). A kept listing that does not parse, is
 * not a regular file owned by the daemon's euid, or is writable by group or others, is
 * removed with a warning and never served. */
int namespace_sync(struct namespace *ns);
uint64_t namespace_nr_nodes(struct namespace *ns);

/* Takes a temporary reference on a live node; NULL when ino is unknown (or forgotten). */
struct ns_node *namespace_get(struct namespace *ns, uint64_t ino);
void namespace_put(struct namespace *ns, struct ns_node *n);

/* Looks name up in directory parent (listing it first when its listing is absent or older than
 * the ttl) and counts one kernel lookup on the result. */
int namespace_lookup(struct namespace *ns, uint64_t parent, const char *name, struct stat *st);
/* The kernel dropped nlookup references to ino. */
void namespace_forget(struct namespace *ns, uint64_t ino, uint64_t nlookup);
/* Counts one kernel lookup on a node the caller holds (readdirplus). */
void namespace_count_lookup(struct namespace *ns, struct ns_node *n);

void namespace_stat(struct namespace *ns, struct ns_node *n, struct stat *st);
enum remote_type namespace_type(struct ns_node *n);
uint64_t namespace_ino(struct ns_node *n);
/* Remote path of the node ("" for the root or a single-file source), newly allocated (NULL
 * when out of memory): only directories keep their path, a file's is built from its parent's. */
char *namespace_path(struct namespace *ns, struct ns_node *n);
/* Newly allocated copies; -EINVAL when the node is not of that kind. */
int namespace_readlink(struct namespace *ns, struct ns_node *n, char **target);
/* ETag or NULL (caller frees). */
char *namespace_etag(struct namespace *ns, struct ns_node *n);

/* A directory's entries at one moment, for opendir/readdir; each node is held until
 * namespace_dir_free. */
struct ns_dirent {
	struct ns_node *node;
	const char *name; /* the node's own name, valid while held */
};
struct ns_dir {
	uint64_t ino;
	uint64_t parent_ino;
	size_t nr_entries;
	struct ns_dirent *entries;
};
int namespace_dir_open(struct namespace *ns, uint64_t ino, struct ns_dir **out);
void namespace_dir_free(struct namespace *ns, struct ns_dir *d);

/* A file's current object version, for fetches. The strings are owned by the struct. When
 * the listing gave no ETag, the object is stat'ed once (per listing) to learn it. */
struct ns_object {
	struct remote_object obj; /* path, size, etag (may be NULL), mtime */
	char *version;            /* cache version name: the ETag, else the mtime as text */
	bool keep_cache;          /* same version as at this node's previous open */
};
int namespace_open_object(struct namespace *ns, struct ns_node *n, struct ns_object *out);
/* The same for a look that is not an open (an xattr, a prefetch): keep_cache is left false and
 * the next open still compares against the previous open's version. */
int namespace_peek_object(struct namespace *ns, struct ns_node *n, struct ns_object *out);
void namespace_object_done(struct ns_object *o);

/* Where n stands in its parent's listing (sorted by name): the parent's ino and n's index
 * there. -ENOENT when n is not (or no longer) listed, or is the root. */
int namespace_position(struct namespace *ns, struct ns_node *n, uint64_t *parent_ino,
	size_t *index);
/* The regular files among the entries [from, from + span) of directory dir_ino's listing, in
 * order, into out (room for span); returns how many. Inos, not held nodes: namespace_get
 * tells whether one is still there. */
struct ns_file {
	uint64_t ino;
	uint64_t size;
	size_t index;
};
size_t namespace_files_from(struct namespace *ns, uint64_t dir_ino, size_t from, size_t span,
	struct ns_file *out);

/* Whether a symlink in directory dir_path ("" for the root) with this target stays inside
 * the mount when followed: the target is relative, and its ".." components, resolved against
 * dir_path, do not climb above the root. A ".." after a name ("a/../b") counts as leaving,
 * since the name may itself be a symlink that goes elsewhere; so does an empty target. */
bool namespace_link_stays_inside(const char *dir_path, const char *target);

#endif
