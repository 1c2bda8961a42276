/* The ferry manifest: one text file at a dataset's root (MANIFEST_NAME) listing every entry
 * with its size, mtime and ETag, so mounting a million-file dataset is one request. Also the
 * format in which the daemon keeps listings in the cache for offline mounts.
 * Format (docs/ferry.md): first line "ferry-manifest 1", then one line per entry,
 *   TYPE SIZE MTIME ETAG PATH
 * TYPE f|d|l, SIZE decimal bytes, MTIME seconds.nanoseconds, ETAG percent-encoded or "-",
 * PATH percent-encoded, relative to the root (for l: PATH then the percent-encoded target). */
#ifndef FERRY_MANIFEST_H
#define FERRY_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "fs/remote/remote.h"

#define MANIFEST_NAME ".ferry-manifest"

/* Parses a whole manifest; cb gets each entry with e->name set to the full relative path.
 * A malformed line fails the parse: -EINVAL with the line number in errbuf. */
int manifest_parse(const char *buf, size_t len, remote_list_cb cb, void *arg, char *errbuf,
	size_t errlen);
int manifest_write_header(FILE *out);
/* Writes one entry; e->name is ignored, path is the full relative path. */
int manifest_write_entry(FILE *out, const char *path, const struct remote_entry *e);
/* A parsed manifest kept for listings and stats, compact enough for ten million entries: the
 * paths, ETags and symlink targets in one arena, fixed-size records sorted by (parent
 * directory, name), so a directory's entries are contiguous and a path is one binary search.
 * Directories the manifest leaves out but names in paths are added; an entry listed twice
 * keeps its first line (with a warning); an entry under something that is not a directory
 * fails the whole manifest. Immutable once built: any thread may read it. */
struct manifest_index;
int manifest_index_new(struct manifest_index **out, const char *buf, size_t len, char *errbuf,
	size_t errlen);
void manifest_index_free(struct manifest_index *m);
uint64_t manifest_index_nr_entries(const struct manifest_index *m);
/* cb gets each entry directly under directory path ("" for the root), its strings valid during
 * the call: -ENOENT when path is not listed, -ENOTDIR when it is not a directory. */
int manifest_index_list(const struct manifest_index *m, const char *path, remote_list_cb cb,
	void *arg);
/* The entry at path, e->name its last component, strings newly allocated (remote_entry_done). */
int manifest_index_stat(const struct manifest_index *m, const char *path, struct remote_entry *e);

/* Walks a local tree and writes its manifest (without the manifest file itself). */
int manifest_write_tree(const char *dir, FILE *out, char *errbuf, size_t errlen);

#endif
