/* The remote-store interface: each backend (remote_http.c, remote_s3.c, remote_dir.c) fills
 * one struct remote_ops. The namespace lists and stats through it; the fetch engine reads
 * byte ranges of one object version through it. */
#ifndef FERRY_REMOTE_H
#define FERRY_REMOTE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

enum remote_type { REMOTE_FILE, REMOTE_DIR, REMOTE_SYMLINK };

/* One entry of a listing, or the answer of a stat. Strings are owned by whoever filled it
 * (remote_entry_done frees them). */
struct remote_entry {
	char *name; /* one path component (listing) or "" for the root (stat) */
	enum remote_type type;
	uint64_t size; /* bytes; 0 for directories */
	struct timespec mtime;
	char *etag; /* opaque version tag, quotes kept as sent; NULL when the store has none */
	char *link_target; /* REMOTE_SYMLINK only */
};
void remote_entry_done(struct remote_entry *e);
/* Whether an ETag names a version of these very bytes. `*` (If-Match's wildcard: any
 * version), an empty tag and a weak one (W/...) do not: If-Match would pin nothing, or fail
 * every time, or a weak match would let other bytes pass. Such an ETag
 * is dropped wherever one is taken from a listing, a stat or a HEAD, and the version is then
 * Last-Modified and size, as for a store without ETags. */
bool remote_etag_is_version(const char *etag);

/* One object version: what a ranged read is pinned to. */
struct remote_object {
	const char *
		path; /* relative to the source root, no leading '/', "" for a single-file source */
	uint64_t size;
	const char *etag; /* sent as If-Match when not NULL */
	struct timespec mtime;
};

/* Called once per entry; a non-zero return stops the listing and is returned by list(). */
typedef int (*remote_list_cb)(void *arg, const struct remote_entry *e);

/* Options from the command line that backends may use. */
struct remote_options {
	const char *ca_file;     /* extra CA bundle for TLS, NULL for the system's */
	bool insecure;           /* never set by default; tests only */
	long connect_timeout_ms; /* 0: default */
	long low_speed_time_s; /* a transfer slower than 1 KiB/s for this long fails; 0: default */
	int verbose;
	/* S3 */
	const char *endpoint; /* http(s)://host:port, NULL: AWS from the region */
	const char *region;
	const char *profile;
	const char *addressing; /* "path", "virtual", "auto" */
	bool no_sign_request;
};

struct remote;
struct remote_http_ops;

struct remote_ops {
	const char *name;
	/* Opens the source (URL or path) and checks that it exists; -errno with a one-line reason
	 * in errbuf (e.g. "cannot connect to 127.0.0.1:8080: Connection refused"). */
	int (*open)(struct remote **out, const char *source, const struct remote_options *opt,
		char *errbuf, size_t errlen);
	void (*free)(struct remote *r);
	/* Lists directory path ("" is the root) through cb; paged listings are followed. */
	int (*list)(struct remote *r, const char *path, remote_list_cb cb, void *arg);
	/* Stats one path; -ENOENT when absent. */
	int (*stat)(struct remote *r, const char *path, struct remote_entry *out);
	/* HTTP-family backends: how the fetch engine's ranged GETs are built (libcurl's, so
	 * fs/remote/remote_i.h). NULL in backends that are read through read. */
	const struct remote_http_ops *http;
	/* Other backends: read exactly len bytes at off of obj; -ESTALE when the object changed. */
	ssize_t (*read)(struct remote *r, const struct remote_object *obj, void *buf, uint64_t len,
		uint64_t off);
};

/* Every backend's struct starts with this. */
struct remote {
	const struct remote_ops *ops;
};

extern const struct remote_ops remote_http_ops;
extern const struct remote_ops remote_dir_ops;
extern const struct remote_ops remote_s3_ops;

/* Picks the backend for a source: http(s)://, s3://, or an existing local directory.
 * NULL (with errbuf set) for anything else. */
const struct remote_ops *remote_ops_for(const char *source, char *errbuf, size_t errlen);

#endif
