/* train/: ranks agree on their run before they size anything by it. Each rank fills a small
 * table of named items (a setting, or a dataset's files, sizes and versions), hashes each, and
 * one collective (comm_differing) tells every rank which items are not the same everywhere, so
 * every rank can name the same differing setting and end the job itself: no rank aborts while
 * the others wait in a collective sized by settings they do not share. */
#ifndef FERRY_TRAIN_AGREE_H
#define FERRY_TRAIN_AGREE_H

#include <stddef.h>
#include <stdint.h>

struct comm;
struct loader;

#define AGREE_MAX_ITEMS 64 /* + 1 <= COMM_DIFFERING_MAX */

/* One thing every rank must hold the same: name is what the user knows it by ("--seq-len",
 * "--data file versions"), value this rank's own, shortened, for the message. */
struct agree_item {
	char name[64];
	uint64_t hash;
	char value[96];
};

/* Caller-owned storage (agree_init). The table's shape is the code's, the same on every
 * rank; more than AGREE_MAX_ITEMS items is a programming error (agree_add aborts). */
struct agree {
	struct agree_item items[AGREE_MAX_ITEMS];
	unsigned nr_items;
};

void agree_init(struct agree *a);
/* An item whose identity is its value text. */
void agree_add(struct agree *a, const char *name, const char *value);
/* An item with a hash of its own (a dataset's identity) and a value to show. */
void agree_add_hash(struct agree *a, const char *name, uint64_t hash, const char *value);
/* The identity of a loader's shards as three items, "<what> files" (their paths, in order),
 * "<what> sizes" and "<what> versions" (the ferry mount's ETag where it gives one, else the
 * modification time). -errno with a reason naming the file in err when a shard cannot be
 * looked at. */
int agree_add_dataset(struct agree *a, const char *what, const struct loader *l, char *err,
	size_t errlen);
/* Compares the table across ranks: -1 when every rank holds the same, else the index of the
 * first item that differs, the same on every rank. Every rank must call it with the same
 * number of items (the table's shape is the code's, not the user's). */
int agree_compare(struct agree *a, struct comm *c);
/* The one line for a mismatch at item i (as agree_compare found it), naming the setting and
 * this rank's value. */
void agree_format(const struct agree *a, int i, int rank, char *buf, size_t len);

/* 64-bit FNV-1a of n bytes, continuing from h (start at AGREE_HASH_INIT). */
#define AGREE_HASH_INIT 0xcbf29ce484222325ULL
uint64_t agree_hash(uint64_t h, const void *data, size_t n);

#endif
