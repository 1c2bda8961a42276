/* The daemon: ferryfs_main opens the source, the cache and the namespace, mounts the FUSE
 * session and serves it until unmount or a signal, then tears everything down in order. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/remote/aws_config.h"
#include "fs/cache.h"
#include "fs/dir_prefetch.h"
#include "fs/ferryfs.h"
#include "fs/fetch.h"
#include "fs/fuse_i.h"
#include "fs/log.h"
#include "fs/metrics.h"
#include "fs/namespace.h"
#include "fs/source_id.h"
#include "fs/tier.h"
#include "fs/remote/url.h"

#define DEFAULT_CHUNK_BYTES (8u << 20)
#define DEFAULT_TTL_S       3600.0

/* The backend of an offline mount: the source could not be reached at start, so every
 * miss fails (EIO to the reader) and only what the cache holds is served. */
static int offline_list(struct remote *r, const char *path, remote_list_cb cb, void *arg)
{
	return -EHOSTUNREACH;
}

static int offline_stat(struct remote *r, const char *path, struct remote_entry *out)
{
	return -EHOSTUNREACH;
}

static ssize_t offline_read(struct remote *r, const struct remote_object *obj, void *buf,
	uint64_t len, uint64_t off)
{
	return -EIO;
}

static const struct remote_ops offline_ops = {
	.name = "offline",
	.list = offline_list,
	.stat = offline_stat,
	.read = offline_read,
};

static struct remote offline_remote = { .ops = &offline_ops };

/* Sends the one line the parent waits for, and closes the pipe. */
static void report(int *ready_fd, const char *fmt, ...)
{
	char line[1100];
	va_list ap;
	int n;

	if (*ready_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(*ready_fd, line, (size_t)n) < 0)
		log_debug("parent gone before the ready line: %s", strerror(errno));
	close(*ready_fd);
	*ready_fd = -1;
}

/* A warning the user must see on the terminal of `ferry mount` (syslog is where nobody looks
 * when a mount comes up degraded): logged, and sent to the waiting parent as a "warning: "
 * line ahead of its "ok". */
static void report_warning(int ready_fd, const char *fmt, ...)
{
	char line[1100];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_warn("%s", line);
	if (ready_fd < 0 || n < 0)
		return;
	line[strcspn(line, "\n")] = '\0'; /* one line, whatever the backend's text held */
	if (dprintf(ready_fd, "warning: %s\n", line) < 0)
		log_debug("parent gone before the warning: %s", strerror(errno));
}

/* The identity of cfg's source with chunk size chunk_bytes (source_id.h). The S3 settings
 * are resolved as the backend resolves them (options, environment, profile), without
 * credentials and without asking the store: a mount with the store down must find the same
 * cache, and a mount of the same bucket on another endpoint must not. */
static int source_cache_id(const struct ferryfs_config *cfg, uint32_t chunk_bytes, uint64_t *id,
	char *err, size_t errlen)
{
	struct source_id_input in = { .source = cfg->source, .chunk_bytes = chunk_bytes };
	struct aws_config ac = { 0 };
	int ret;

	if (!strncmp(cfg->source, "s3://", 5)) {
		struct aws_config_request req = {
			.profile = cfg->remote.profile,
			.region = cfg->remote.region,
			.endpoint = cfg->remote.endpoint,
			.addressing = cfg->remote.addressing,
			.no_sign_request = true, /* settings only: credentials are the backend's */
		};

		ret = aws_config_load(&ac, &req, err, errlen);
		if (ret)
			return ret;
		in.endpoint = ac.endpoint;
		in.region = ac.region;
		in.addressing = ac.addressing;
	}
	ret = source_id(&in, id, err, errlen);
	aws_config_done(&ac);
	return ret;
}

/* The shared chunk tier of --shared-cache. Its chunks are named by the source's identity with
 * the cache's actual chunk size (an existing cache may have another than asked). A tier that
 * refuses us (bad URL, no bucket, 403) fails the mount; one that does not answer only warns:
 * it starts down and is tried again later. */
static int open_tier(const struct ferryfs_config *cfg, uint32_t chunk_bytes, struct tier **out,
	int ready_fd, char *err, size_t errlen)
{
	struct tier_config tc = {
		.url = cfg->shared_cache,
		.endpoint = cfg->shared_endpoint,
		.region = cfg->shared_region,
		.profile = cfg->shared_profile,
		.remote = &cfg->remote,
		.put_queue_bytes = cfg->shared_write_memory,
	};
	bool warned;
	int ret;

	ret = source_cache_id(cfg, chunk_bytes, &tc.source_id, err, errlen);
	if (ret)
		return ret;
	ret = tier_open(out, &tc, &warned, err, errlen);
	if (ret)
		return ret;
	if (warned) {
		report_warning(ready_fd, "%s", err);
		err[0] = '\0';
	}
	return 0;
}

static char *source_cache_dir(const char *cache_root, uint64_t id)
{
	char *dir;

	if (asprintf(&dir, "%s/%016llx", cache_root, (unsigned long long)id) < 0)
		return NULL;
	return dir;
}

/* A new chunk size is a new cache (the size is part of the identity), so a user who changes
 * it starts cold and leaves the old cache's bytes on disk: say where they are. */
static void note_other_chunk_sizes(const struct ferryfs_config *cfg, uint32_t chunk_bytes)
{
	char err[256];

	for (uint32_t cb = 64u << 10; cb && cb <= (64u << 20); cb <<= 1) {
		uint64_t id;
		char *dir;

		if (cb == chunk_bytes || source_cache_id(cfg, cb, &id, err, sizeof(err)))
			continue;
		dir = source_cache_dir(cfg->cache_dir, id);
		if (dir && access(dir, F_OK) == 0)
			log_info(
				"the cache of this source with chunk size %u is in %s and is not used "
				"with chunk size %u; remove it to free its space",
				cb, dir, chunk_bytes);
		free(dir);
	}
}

static bool has_kept_root_listing(const char *state_dir)
{
	char path[PATH_MAX];

	/* The same name namespace.c gives the root's listing: XXH3 of "". */
	snprintf(path, sizeof(path), "%s/%016llx.list", state_dir,
		(unsigned long long)XXH3_64bits("", 0));
	return access(path, R_OK) == 0;
}

/* Appends s to the option string, escaping what fuse_opt would split on. */
static int opt_append_escaped(char *buf, size_t len, const char *s)
{
	size_t n = strlen(buf);

	for (; *s; s++) {
		if (*s == ',' || *s == '\\') {
			if (n + 1 >= len)
				return -ENAMETOOLONG;
			buf[n++] = '\\';
		}
		if (n + 1 >= len)
			return -ENAMETOOLONG;
		buf[n++] = *s;
	}
	buf[n] = '\0';
	return 0;
}

/* FUSE mounts get a 128 KiB readahead window, so buffered reads reach us as 128 KiB
 * requests. Measured here (512 MiB file, warm chunk cache, dd bs=1M, copy replies): 1.4-3.3
 * GB/s at 128 KiB, 4.1-4.3 GB/s at 1 MiB, no better at 4 MiB. The bdi is found through
 * mountinfo, not stat(), which would ask this very daemon before it serves. It must be
 * raised after FUSE's INIT is answered (the kernel then lowers ra_pages to the max_readahead
 * it offered, the old 128 KiB), so the syncer does it on its first, early tick. Root only;
 * failure just leaves the kernel's default. */
static void raise_readahead(const char *mountpoint)
{
	char *line = NULL, devno[32] = "", path[96];
	size_t cap = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		char mp[PATH_MAX], dev[32];

		/* Mount points with escaped characters simply do not match: no harm. */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mp) == 2 &&
			!strcmp(mp, mountpoint))
			snprintf(devno, sizeof(devno), "%s", dev);
	}
	free(line);
	fclose(f);
	if (!devno[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
	f = fopen(path, "we");
	if (!f)
		return;
	fputs("1024\n", f);
	if (fclose(f))
		log_debug("cannot raise readahead of %s: %s", mountpoint, strerror(errno));
}

struct syncer {
	struct ferryfs *fs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop; /* protected by lock */
	const char *mountpoint;
	pthread_t thread;
	bool started;
};

/* Makes chunk maps and learned listings durable every SYNC_INTERVAL_S, so a crash loses at
 * most that much cache bookkeeping: those chunks are fetched again, never served unverified.
 * Every second was tried first: fdatasync of a cache file that fills are writing into stalls
 * those fills, and a cold 2 GiB dd ran at 715-725 MB/s against 940-1000 MB/s with 30 s (same
 * machine, alternating runs). At 30 s the kernel's flusher (dirty_expire_centisecs, 30 s by
 * default) has written most of the data back already, so the sync itself is cheap.
 * docs/ferry.md (ferry mount, "Signals") states this interval and what a kill -9 loses:
 * change both together. */
#define SYNC_INTERVAL_S 30
static void *syncer_main(void *arg)
{
	struct syncer *s = arg;
	struct timespec t;
	bool first = true;

	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (first) {
			t.tv_nsec += 200 * 1000 * 1000;
			if (t.tv_nsec >= 1000000000) {
				t.tv_sec++;
				t.tv_nsec -= 1000000000;
			}
		} else {
			t.tv_sec += SYNC_INTERVAL_S;
		}
		pthread_cond_timedwait(&s->cond, &s->lock, &t);
		if (s->stop)
			break;
		pthread_mutex_unlock(&s->lock);
		if (first)
			raise_readahead(s->mountpoint);
		first = false;
		cache_sync(s->fs->cache);
		namespace_sync(s->fs->ns);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int syncer_start(struct syncer *s, struct ferryfs *fs)
{
	pthread_condattr_t ca;
	int ret;

	s->fs = fs;
	s->mountpoint = fs->cfg->mountpoint;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	ret = pthread_create(&s->thread, NULL, syncer_main, s);
	s->started = !ret;
	return -ret;
}

static void syncer_stop(struct syncer *s)
{
	if (!s->started)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	s->started = false;
}

/* Stopping on SIGTERM, SIGINT or SIGHUP. libfuse's handlers end the session loop, but the
 * loop then waits for the requests in progress, and a read waiting on a stalled server waits
 * out its timeouts and retries (minutes). So the handler also wakes the stopper thread,
 * which aborts the fetch engine: those reads fail with EIO at once and the daemon stops, as
 * `ferry umount --force` expects. One stopper per process (the daemon serves one mount). */
static struct fuse_session *volatile stop_session;
static int stop_pipe[2] = { -1, -1 }; /* never closed: a late handler must not write into a
				       * descriptor that was reused */

struct stopper {
	pthread_t thread;
	struct fetcher *fetcher;
	bool started;
};

static void stop_handler(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (stop_session)
		fuse_session_exit(stop_session);
	if (write(stop_pipe[1], &c, 1) < 0) {
		/* the pipe holds a byte already: the stopper is awake */
	}
	errno = saved;
}

static void *stopper_main(void *arg)
{
	struct stopper *st = arg;
	char c = 0;

	while (read(stop_pipe[0], &c, 1) < 0 && errno == EINTR)
		;
	if (c) { /* a signal, not stopper_stop */
		log_info("signal %d: stopping; reads waiting for the store fail with EIO", c);
		fetcher_abort(st->fetcher);
	}
	return NULL;
}

static int stopper_start(struct stopper *st, struct fuse_session *se, struct fetcher *f)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	struct sigaction sa = { .sa_handler = stop_handler };
	int ret;

	if (stop_pipe[0] < 0 && pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	/* Reads block; only the handler's writes must never block. */
	fcntl(stop_pipe[0], F_SETFL, 0);
	st->fetcher = f;
	ret = -pthread_create(&st->thread, NULL, stopper_main, st);
	if (ret)
		return ret;
	st->started = true;
	stop_session = se;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return -errno;
	return 0;
}

/* Before the session is destroyed. The signals are ignored from here on: a second SIGTERM
 * (a double Ctrl-C, a repeated umount --force) must not kill the final sync of the maps;
 * fuse_remove_signal_handlers leaves them so (it resets only its own handler). */
static void stopper_stop(struct stopper *st)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	char c = 0;

	if (!st->started)
		return;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_IGN);
	stop_session = NULL;
	if (write(stop_pipe[1], &c, 1) < 0) {
		/* a signal's byte is there already: the stopper has woken */
	}
	pthread_join(st->thread, NULL);
	st->started = false;
}

int ferryfs_main(const struct ferryfs_config *cfg, int ready_fd)
{
	struct ferryfs fs = { .cfg = cfg };
	struct syncer syncer = { 0 };
	struct stopper stopper = { 0 };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	struct fuse_loop_config *loop = NULL;
	const struct remote_ops *ops;
	struct cache_config cc = { 0 };
	struct fetch_config fc = { 0 };
	struct namespace_config nc = { 0 };
	char err[512] = "", offline_why[512] = "", opts[8192], *state_dir = NULL;
	uint64_t id;
	bool mounted = false, handlers = false;
	int ret;

	if (!cfg->foreground)
		log_use_syslog();
	log_set_level(cfg->verbose >= 2   ? LOG_LEVEL_DEBUG
		      : cfg->verbose == 1 ? LOG_LEVEL_INFO
					  : LOG_LEVEL_WARN);
	clock_gettime(CLOCK_MONOTONIC, &fs.started);
	metrics_histogram_init(&fs.read_latency, METRICS_LATENCY_FUSE_READ);
	/* Everything shown (fsname, logs, user.ferry.source, ferry stat) is the redacted form;
	 * the requests and the identity use cfg->source in full. */
	fs.source = url_redact(cfg->source);
	fs.chunk_bytes = cfg->chunk_bytes ? cfg->chunk_bytes : DEFAULT_CHUNK_BYTES;
	fs.timeout_s = cfg->metadata_ttl_s < 0    ? 365.0 * 86400
		       : cfg->metadata_ttl_s == 0 ? 0
						  : cfg->metadata_ttl_s;

	ops = remote_ops_for(cfg->source, err, sizeof(err));
	if (!ops) {
		ret = -EINVAL;
		goto fail;
	}
	ret = source_cache_id(cfg, fs.chunk_bytes, &id, err, sizeof(err));
	if (ret)
		goto fail;
	fs.cache_dir = source_cache_dir(cfg->cache_dir, id);
	if (!fs.source || !fs.cache_dir || asprintf(&state_dir, "%s/listings", fs.cache_dir) < 0) {
		state_dir = NULL;
		snprintf(err, sizeof(err), "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	/* Private to the daemon's user whatever the umask: the chmod after a mkdir that
	 * created it (mkdir's mode is filtered by the umask). An existing root is left as
	 * its owner made it. */
	if (!mkdir(cfg->cache_dir, 0700)) {
		chmod(cfg->cache_dir, 0700);
	} else if (errno != EEXIST) {
		ret = -errno;
		snprintf(err, sizeof(err), "cannot create cache directory %s: %s", cfg->cache_dir,
			strerror(errno));
		goto fail;
	}

	ret = ops->open(&fs.remote, cfg->source, &cfg->remote, err, sizeof(err));
	if (ret) {
		/* Offline only when the store could not be asked; an answer (access denied, no such
		 * bucket or path, bad settings) is the user's to see, cache or no cache. The kept
		 * listing is looked for under this source's identity only: another endpoint's or
		 * another chunk size's cache is never served as this source. */
		if (ret == -EACCES || ret == -EPERM || ret == -ENOENT || ret == -EINVAL ||
			ret == -ENOTSUP || !has_kept_root_listing(state_dir))
			goto fail;
		/* Warned once the kept listing has proved usable (namespace_new), not before. */
		snprintf(offline_why, sizeof(offline_why), "%s", err);
		err[0] = '\0';
		fs.remote = &offline_remote;
		fs.offline = true;
	}

	if (access(fs.cache_dir, F_OK)) {
		note_other_chunk_sizes(cfg, fs.chunk_bytes);
		/* This source's directory too (cache_open would make it, through the umask). */
		if (!mkdir(fs.cache_dir, 0700))
			chmod(fs.cache_dir, 0700);
	}
	cc.dir = fs.cache_dir;
	cc.max_bytes = cfg->cache_bytes;
	cc.chunk_bytes = fs.chunk_bytes;
	cc.lock_wait_ms = 10000;
	ret = cache_open(&fs.cache, &cc, err, sizeof(err));
	if (ret)
		goto fail;
	fs.chunk_bytes = cache_chunk_bytes(fs.cache);
	fc.max_transfers = cfg->max_transfers;
	if (cfg->shared_cache && !fs.offline) {
		ret = open_tier(cfg, fs.chunk_bytes, &fc.tier, ready_fd, err, sizeof(err));
		if (ret)
			goto fail;
	}
	ret = fetcher_new(&fs.fetcher, fs.remote, fs.cache, &fc);
	if (ret) {
		snprintf(err, sizeof(err), "cannot start the fetch engine: %s", strerror(-ret));
		goto fail;
	}
	nc.remote = fs.offline ? NULL : fs.remote;
	nc.source = cfg->source;
	nc.state_dir = state_dir;
	nc.ttl_s = cfg->metadata_ttl_s;
	nc.uid = getuid();
	nc.gid = getgid();
	nc.allow_outside_symlinks = cfg->allow_outside_symlinks;
	ret = namespace_new(&fs.ns, &nc);
	if (ret) {
		if (fs.offline)
			snprintf(err, sizeof(err),
				"%s, and the listing kept by an earlier mount "
				"cannot be used (%s)",
				offline_why, strerror(-ret));
		else
			snprintf(err, sizeof(err), "cannot read the listing of %s: %s", fs.source,
				strerror(-ret));
		goto fail;
	}
	if (fs.offline)
		report_warning(ready_fd, "%s; serving what is cached (offline)", offline_why);
	if (!fs.offline) {
		ret = dir_prefetch_new(&fs.dir_prefetch, fs.ns, fs.fetcher, fs.chunk_bytes,
			cfg->dir_readahead);
		if (ret) {
			snprintf(err, sizeof(err), "cannot start a thread: %s", strerror(-ret));
			goto fail;
		}
	}
	ret = ferry_pins_start(&fs);
	if (ret) {
		snprintf(err, sizeof(err), "cannot start a thread: %s", strerror(-ret));
		goto fail;
	}
	/* Before the mount: an address that cannot be bound (a port in use) fails the mount
	 * with its one line rather than leave a mount nobody can watch. */
	if (cfg->metrics_addr) {
		ret = metrics_server_new(&fs.metrics, cfg->metrics_addr, &fs, err, sizeof(err));
		if (ret)
			goto fail;
	}

	snprintf(opts, sizeof(opts),
		"ro,default_permissions,subtype=ferry,max_read=%u,fsname=", 1u << 20);
	ret = opt_append_escaped(opts, sizeof(opts), fs.source); /* /proc/mounts: all can read */
	if (!ret && cfg->fuse_options && *cfg->fuse_options) {
		size_t n = strlen(opts);

		if (n + 1 + strlen(cfg->fuse_options) + 1 > sizeof(opts))
			ret = -ENAMETOOLONG;
		else
			snprintf(opts + n, sizeof(opts) - n, ",%s", cfg->fuse_options);
	}
	if (ret || fuse_opt_add_arg(&args, "ferry") || fuse_opt_add_arg(&args, "-o") ||
		fuse_opt_add_arg(&args, opts)) {
		snprintf(err, sizeof(err), "FUSE options too long");
		ret = -EINVAL;
		goto fail;
	}
	se = fuse_session_new(&args, &ferry_ll_ops, sizeof(ferry_ll_ops), &fs);
	if (!se) {
		snprintf(err, sizeof(err), "bad FUSE options: %s", opts);
		ret = -EINVAL;
		goto fail;
	}
	if (fuse_set_signal_handlers(se)) {
		snprintf(err, sizeof(err), "cannot install signal handlers");
		ret = -EINVAL;
		goto fail;
	}
	handlers = true;
	ret = stopper_start(&stopper, se, fs.fetcher);
	if (ret) {
		snprintf(err, sizeof(err), "cannot install signal handlers: %s", strerror(-ret));
		goto fail;
	}
	if (fuse_session_mount(se, cfg->mountpoint)) {
		snprintf(err, sizeof(err), "cannot mount on %s (see syslog for FUSE's reason)",
			cfg->mountpoint);
		ret = -EIO;
		goto fail;
	}
	mounted = true;
	ret = syncer_start(&syncer, &fs);
	if (ret) {
		snprintf(err, sizeof(err), "cannot start a thread: %s", strerror(-ret));
		goto fail;
	}
	log_info("serving %s at %s (cache %s%s)", fs.source, cfg->mountpoint, fs.cache_dir,
		fs.offline ? ", offline" : "");
	report(&ready_fd, "ok");

	loop = fuse_loop_cfg_create();
	if (!loop) {
		ret = -ENOMEM;
		goto out;
	}
	fuse_loop_cfg_set_clone_fd(loop, 1);
	fuse_loop_cfg_set_max_threads(loop, 16);
	fuse_loop_cfg_set_idle_threads(loop, 8);
	ret = fuse_session_loop_mt(se, loop);
	/* A signal that ended the loop is a clean stop; only negative values are failures. */
	if (ret > 0)
		ret = 0;
	if (ret)
		log_error("FUSE session ended: %s", strerror(-ret));
	ferry_log_ops(&fs);
	goto out;

fail:
	if (!err[0])
		snprintf(err, sizeof(err), "%s", strerror(ret < 0 ? -ret : EIO));
	log_error("%s", err);
	report(&ready_fd, "%s", err);
out:
	/* First: its thread reads the cache, the fetcher and the tier freed below. */
	metrics_server_free(fs.metrics);
	fs.metrics = NULL;
	fuse_loop_cfg_destroy(loop);
	if (mounted)
		fuse_session_unmount(se);
	stopper_stop(&stopper);
	if (handlers)
		fuse_remove_signal_handlers(se);
	if (se)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	syncer_stop(&syncer);
	ferry_pins_stop(&fs);
	dir_prefetch_free(fs.dir_prefetch);
	namespace_free(fs.ns);
	fetcher_free(fs.fetcher);
	if (fs.cache)
		cache_sync(fs.cache);
	cache_free(fs.cache);
	if (fs.remote && !fs.offline)
		fs.remote->ops->free(fs.remote);
	free(state_dir);
	free(fs.cache_dir);
	free(fs.source);
	if (ready_fd >= 0)
		report(&ready_fd, "daemon stopped before the mount was live");
	return ret < 0 ? ret : 0;
}
