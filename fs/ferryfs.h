/* fs/'s public entry point: serve one source at one mountpoint. The command line (mount/)
 * parses options, forks, and calls ferryfs_main in the process that becomes the daemon. */
#ifndef FERRY_FERRYFS_H
#define FERRY_FERRYFS_H

#include <stdbool.h>
#include <stdint.h>
#include "fs/remote/remote.h"

struct ferryfs_config {
	const char *source;       /* http(s)://..., s3://..., or a local directory */
	const char *mountpoint;   /* absolute, an empty directory */
	const char *cache_dir;    /* root of all caches; this source gets a subdirectory */
	uint64_t cache_bytes;     /* 0: no limit */
	uint32_t chunk_bytes;     /* 0: 8 MiB */
	double metadata_ttl_s;    /* listings and attributes are re-checked after this; <0: never */
	const char *fuse_options; /* comma-separated -o options passed to FUSE, or NULL */
	unsigned max_transfers;   /* 0: default */
	unsigned dir_readahead; /* files fetched ahead of an in-order walk of a directory; 0: off */
	bool allow_outside_symlinks; /* serve symlinks whose target is absolute or leaves the
	                              * mount (hidden by default, namespace.h) */
	bool foreground;             /* log to stderr instead of syslog */
	int verbose;
	struct remote_options remote;
	/* The shared chunk tier (fs/tier.h): s3://BUCKET[/PREFIX], NULL for none, and its own
	 * S3 settings (NULL: the AWS chain's, as for an S3 source). */
	const char *shared_cache;
	const char *shared_endpoint;
	const char *shared_region;
	const char *shared_profile;
	uint64_t shared_write_memory; /* the tier's PUT queue (0: TIER_PUT_QUEUE_BYTES) */
	/* HOST:PORT to serve Prometheus metrics on (fs/metrics.h), NULL: none */
	const char *metrics_addr;
};

/* Opens the source and the cache, mounts, and serves until unmounted or sent SIGTERM/SIGINT.
 * When ready_fd >= 0, writes "ok\n" to it once the mount is live, or one line of error text
 * before returning non-zero, and closes it. Before either it may write lines starting with
 * "warning: " (e.g. a mount that comes up offline), which the reader shows to the user.
 * Returns 0 on a clean unmount. */
int ferryfs_main(const struct ferryfs_config *cfg, int ready_fd);

#endif
