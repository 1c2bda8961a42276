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
/* Walks a local tree and writes its manifest (without the manifest file itself). */
int manifest_write_tree(const char *dir, FILE *out, char *errbuf, size_t errlen);

#endif
