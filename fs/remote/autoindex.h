/* Parser of the HTML directory pages that web servers generate (nginx autoindex, Apache
 * mod_autoindex plain, FancyIndexing <pre> and HTMLTable): names, types and, where the page
 * gives them exactly, sizes. The HTTP backend lists a directory through it when the dataset has
 * no manifest. */
#ifndef FERRY_AUTOINDEX_H
#define FERRY_AUTOINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fs/remote/remote.h"

/* One link of an index page. name is decoded and safe (one path component, no NUL, not "."
 * or "..", at most 255 bytes). */
struct autoindex_entry {
	const char *name;
	enum remote_type type; /* REMOTE_DIR when the link ends in '/', else REMOTE_FILE */
	bool size_exact;       /* the page gave the size in bytes */
	uint64_t size;
	time_t mtime; /* minute resolution, read as UTC; 0 when not found */
};

/* Called once per entry; a non-zero return stops the parse and is returned. */
typedef int (*autoindex_cb)(void *arg, const struct autoindex_entry *e);

/* Parses a page. Parent links, sort links ("?C=N;O=D"), absolute and off-site links are
 * skipped; unsafe names are skipped with one warning each. Returns 0, the callback's value, or
 * -ENOMEM. */
int autoindex_parse(const char *html, size_t len, autoindex_cb cb, void *arg);

#endif
