/* Readahead across the files of a directory: when files of one directory are opened in the
 * order of its listing (cat of a glob, tar, a data loader walking samples), the next files are
 * fetched in the background before they are opened, as readahead does within one file. A
 * cold walk of small files otherwise waits for one round trip (two, without ETags) per file. */
#ifndef FERRY_DIR_PREFETCH_H
#define FERRY_DIR_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

struct fetcher;
struct namespace;
struct ns_node;
struct dir_prefetch;

/* ahead_files: files fetched ahead of the last one opened; 0 turns it off (*out = NULL). */
int dir_prefetch_new(struct dir_prefetch **out, struct namespace *ns, struct fetcher *f,
	uint32_t chunk_bytes, unsigned ahead_files);
/* Stops the threads; what they queued to the fetch engine goes on there. */
void dir_prefetch_free(struct dir_prefetch *dp);
/* A regular file was opened (cached: all its bytes were in the cache): notes where, and queues
 * the files after it when the opens walk the directory in order. A walk over cached files
 * starts nothing until it meets one that is not. Never blocks on the network. NULL dp:
 * nothing. */
void dir_prefetch_opened(struct dir_prefetch *dp, struct ns_node *n, bool cached);
/* Files whose fetch it started. */
uint64_t dir_prefetch_nr_files(const struct dir_prefetch *dp);

#endif
