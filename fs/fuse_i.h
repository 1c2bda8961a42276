/* Private to the daemon: the state shared by daemon.c (setup, session, teardown), fuse_ops.c
 * (the FUSE low-level operations) and ctl.c (the control xattrs, ioctl and pins). */
#ifndef FERRY_FUSE_I_H
#define FERRY_FUSE_I_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "fs/ferryfs.h"
#include "fs/metrics.h"
#include "fs/namespace.h"

struct cache;
struct cache_object;
struct dir_prefetch;
struct fetcher;
struct metrics_server;
struct pin;

/* The FUSE requests counted for the summary logged at unmount under -v: for a workload that
 * opens many files, time goes to round trips through the kernel rather than to work in the
 * daemon, so how many of each kind it made is the first thing to know. */
enum ferry_op {
	FERRY_OP_LOOKUP,
	FERRY_OP_FORGET,
	FERRY_OP_GETATTR,
	FERRY_OP_READLINK,
	FERRY_OP_OPENDIR,
	FERRY_OP_READDIR,
	FERRY_OP_RELEASEDIR,
	FERRY_OP_OPEN,
	FERRY_OP_READ,
	FERRY_OP_RELEASE,
	FERRY_OP_STATFS,
	FERRY_OP_GETXATTR,
	FERRY_OP_LISTXATTR,
	FERRY_OP_IOCTL,
	FERRY_OP_REFUSED, /* everything that would modify: EROFS */
	FERRY_NR_OPS
};

/* One mounted file system. Everything but the counters and the pin list is set up before
 * the session starts and torn down after it ends, so the operations read it without locks. */
struct ferryfs {
	const struct ferryfs_config *cfg;
	char *source;          /* as given, for messages and user.ferry.source */
	struct remote *remote; /* the real backend, or the offline stand-in */
	bool offline;
	struct cache *cache;
	struct fetcher *fetcher;
	struct namespace *ns;
	struct dir_prefetch *dir_prefetch; /* NULL: off (or offline) */
	uint32_t chunk_bytes;
	double timeout_s;        /* entry and attribute timeouts given to the kernel */
	char *cache_dir;         /* this source's cache directory */
	struct timespec started; /* CLOCK_MONOTONIC */

	atomic_uint_fast64_t nr_ops[FERRY_NR_OPS];
	atomic_uint_fast64_t read_bytes;
	atomic_uint_fast64_t read_errors;
	struct metrics_histogram read_latency; /* every FUSE read, arrival to reply */
	struct metrics_server *metrics;        /* --metrics-addr; NULL: none */

	/* FERRY_IOC_RESIDENT pins, released by pin_thread when they expire. */
	pthread_mutex_t pin_lock;
	pthread_cond_t pin_cond;
	struct pin *pins; /* protected by pin_lock */
	bool pin_stop;    /* protected by pin_lock */
	pthread_t pin_thread;
	bool pin_thread_started;
};

/* One open file. node and co are held for the handle's life; the readahead state is
 * protected by lock (the kernel sends reads of one file from several threads). */
struct ferry_file {
	struct ns_node *node;
	struct ns_object obj;
	struct cache_object *co;
	pthread_mutex_t lock;
	uint64_t next_off;      /* where a sequential reader reads next */
	unsigned nr_sequential; /* consecutive reads that continued the previous one */
	uint64_t prefetched_to; /* chunks below this index were already asked for */
};

static inline struct ferryfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct ferry_file *file_of(struct fuse_file_info *fi)
{
	return (struct ferry_file *)(uintptr_t)fi->fh;
}

static inline void count_op(struct ferryfs *fs, enum ferry_op op)
{
	atomic_fetch_add_explicit(&fs->nr_ops[op], 1, memory_order_relaxed);
}

extern const struct fuse_lowlevel_ops ferry_ll_ops;

/* The control operations (ctl.c), in ferry_ll_ops. */
void ferry_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void ferry_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void ferry_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
	struct fuse_file_info *fi, unsigned flags, const void *in_buf, size_t in_bufsz,
	size_t out_bufsz);

int ferry_pins_start(struct ferryfs *fs);
/* Releases every pin and stops the thread. */
void ferry_pins_stop(struct ferryfs *fs);
/* The JSON object of FERRY_XATTR_STATS; returns its length (the text is NUL-terminated,
 * truncated to len). */
size_t ferry_stats_json(struct ferryfs *fs, char *buf, size_t len);
/* Logs how many requests of each kind the kernel sent (info level: -v). */
void ferry_log_ops(struct ferryfs *fs);

#endif
