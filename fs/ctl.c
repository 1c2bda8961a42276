/* The control interface of a ferry mount (ferry_ctl.h): the user.ferry.* xattrs that report
 * on the mount and its files, the FERRY_IOC_RESIDENT ioctl with the pins it hands out,
 * which the pin thread releases when they expire, and FERRY_IOC_PREFETCH, which hands a
 * reader's ranges to the fetcher's readahead. fuse_ops.c routes the requests here. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/cache.h"
#include "fs/dir_prefetch.h"
#include "fs/ferry_ctl.h"
#include "fs/fetch.h"
#include "fs/fuse_i.h"
#include "fs/log.h"
#include "fs/namespace.h"
#include "fs/tier.h"

/* A FERRY_IOC_RESIDENT hold: chunks [first, last] of co pinned until deadline. */
struct pin {
	struct pin *next;
	struct cache_object *co;
	uint64_t first, last;
	struct timespec deadline; /* CLOCK_MONOTONIC */
};

size_t ferry_stats_json(struct ferryfs *fs, char *buf, size_t len)
{
	struct cache_stats cs;
	struct fetch_stats st;
	struct tier_stats ts;
	struct timespec now;
	double up, tput;
	int n;

	cache_get_stats(fs->cache, &cs);
	fetcher_get_stats(fs->fetcher, &st);
	tier_get_stats(fetcher_tier(fs->fetcher), &ts);
	clock_gettime(CLOCK_MONOTONIC, &now);
	up = (double)(now.tv_sec - fs->started.tv_sec) + (now.tv_nsec - fs->started.tv_nsec) / 1e9;
	tput = st.fetch_ns ? (double)st.bytes_fetched * 1e9 / (double)st.fetch_ns : 0;
	n = snprintf(buf, len,
		"{\"version\":\"%s\",\"pid\":%d,\"offline\":%s,\"uptime_s\":%.1f,"
		"\"cache_used_bytes\":%" PRIu64 ",\"cache_max_bytes\":%" PRIu64 ","
		"\"chunk_bytes\":%u,\"nr_objects\":%" PRIu64 ",\"nr_chunks\":%" PRIu64 ","
		"\"hits\":%" PRIu64 ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64 ","
		"\"verify_failures\":%" PRIu64 ",\"disk_errors\":%" PRIu64 ",\"degraded\":%s,"
		"\"bytes_fetched\":%" PRIu64 ","
		"\"requests\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"fetch_errors\":%" PRIu64 ","
		"\"fetch_ns\":%" PRIu64 ",\"fetch_bytes_per_s\":%.0f,"
		"\"cache_read_bytes\":%" PRIu64 ",\"chunks_in_flight\":%" PRIu64 ","
		"\"reads\":%" PRIu64 ",\"read_bytes\":%" PRIu64 ",\"read_errors\":%" PRIu64 ","
		"\"dir_readahead_files\":%" PRIu64 ","
		"\"tier_state\":\"%s\",\"tier_hits\":%" PRIu64 ",\"tier_bytes\":%" PRIu64 ","
		"\"tier_misses\":%" PRIu64 ",\"tier_rejected\":%" PRIu64 ",\"tier_errors\":%" PRIu64
		","
		"\"tier_puts\":%" PRIu64 ",\"tier_put_bytes\":%" PRIu64 ","
		"\"tier_puts_dropped\":%" PRIu64 ",\"tier_put_queued\":%" PRIu64 "}\n",
		FERRY_VERSION, (int)getpid(), fs->offline ? "true" : "false", up, cs.used_bytes,
		cs.max_bytes, fs->chunk_bytes, cs.nr_objects, cs.nr_chunks, cs.hits, cs.misses,
		cs.evictions, cs.verify_failures, cs.disk_errors, cs.degraded ? "true" : "false",
		st.bytes_fetched, st.requests, st.retries, st.errors, st.fetch_ns, tput,
		st.cache_read_bytes, st.chunks_in_flight,
		(uint64_t)atomic_load(&fs->nr_ops[FERRY_OP_READ]),
		(uint64_t)atomic_load(&fs->read_bytes), (uint64_t)atomic_load(&fs->read_errors),
		dir_prefetch_nr_files(fs->dir_prefetch), tier_state_name(ts.state), ts.hits,
		ts.bytes, ts.misses, ts.rejected, ts.errors, ts.puts, ts.put_bytes, ts.puts_dropped,
		ts.put_queued);
	return n < 0 ? 0 : (size_t)n;
}

void ferry_log_ops(struct ferryfs *fs)
{
	static const char *const names[FERRY_NR_OPS] = {
		[FERRY_OP_LOOKUP] = "lookup",
		[FERRY_OP_FORGET] = "forget",
		[FERRY_OP_GETATTR] = "getattr",
		[FERRY_OP_READLINK] = "readlink",
		[FERRY_OP_OPENDIR] = "opendir",
		[FERRY_OP_READDIR] = "readdir",
		[FERRY_OP_RELEASEDIR] = "releasedir",
		[FERRY_OP_OPEN] = "open",
		[FERRY_OP_READ] = "read",
		[FERRY_OP_RELEASE] = "release",
		[FERRY_OP_STATFS] = "statfs",
		[FERRY_OP_GETXATTR] = "getxattr",
		[FERRY_OP_LISTXATTR] = "listxattr",
		[FERRY_OP_IOCTL] = "ioctl",
		[FERRY_OP_REFUSED] = "refused",
	};
	char line[512];
	size_t used = 0;

	for (int op = 0; op < FERRY_NR_OPS && used < sizeof(line); op++) {
		int n = snprintf(line + used, sizeof(line) - used, " %s %" PRIu64, names[op],
			(uint64_t)atomic_load(&fs->nr_ops[op]));

		if (n < 0)
			break;
		used += (size_t)n;
	}
	log_info("FUSE requests:%s", line);
}

/* The value of a control xattr in a new string; -ENODATA for names we do not have. */
static int xattr_value(struct ferryfs *fs, struct ns_node *n, const char *name, char **out)
{
	struct cache_object *co;
	char *v = NULL;
	int ret = 0;

	if (!strcmp(name, FERRY_XATTR_STATS) && namespace_ino(n) == NS_ROOT_INO) {
		size_t len = ferry_stats_json(fs, NULL, 0) + 64;

		v = malloc(len);
		if (v)
			ferry_stats_json(fs, v, len);
	} else if (!strcmp(name, FERRY_XATTR_SOURCE)) {
		char *p = namespace_path(fs->ns, n);
		size_t sl = strlen(fs->source);

		if (p && asprintf(&v, "%s%s%s", fs->source,
				 *p && sl && fs->source[sl - 1] != '/' ? "/" : "", p) < 0)
			v = NULL;
		free(p);
	} else if (!strcmp(name, FERRY_XATTR_ETAG) && namespace_type(n) == REMOTE_FILE) {
		v = namespace_etag(fs->ns, n);
		if (!v)
			v = strdup("");
	} else if (!strcmp(name, FERRY_XATTR_CACHED) && namespace_type(n) == REMOTE_FILE) {
		ret = fetcher_open_node(fs->fetcher, fs->ns, n, &co);
		if (ret)
			return ret;
		if (asprintf(&v, "%" PRIu64, cache_object_cached_bytes(co)) < 0)
			v = NULL;
		cache_object_unref(co);
	} else {
		return -ENODATA;
	}
	if (!v)
		return -ENOMEM;
	*out = v;
	return ret;
}

void ferry_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_node *n = namespace_get(fs->ns, ino);
	char *v = NULL;
	size_t len;
	int ret;

	count_op(fs, FERRY_OP_GETXATTR);
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	ret = xattr_value(fs, n, name, &v);
	namespace_put(fs->ns, n);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	len = strlen(v);
	if (!size)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, v, len);
	free(v);
}

void ferry_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_node *n = namespace_get(fs->ns, ino);
	char list[256];
	size_t len = 0;

	count_op(fs, FERRY_OP_LISTXATTR);
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
#define ADD(s) (memcpy(list + len, s, sizeof(s)), len += sizeof(s))
	if (namespace_ino(n) == NS_ROOT_INO)
		ADD(FERRY_XATTR_STATS);
	ADD(FERRY_XATTR_SOURCE);
	if (namespace_type(n) == REMOTE_FILE) {
		ADD(FERRY_XATTR_ETAG);
		ADD(FERRY_XATTR_CACHED);
	}
#undef ADD
	namespace_put(fs->ns, n);
	if (!size)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
}

static void timespec_add_ms(struct timespec *t, uint32_t ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (long)(ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000;
	}
}

static bool timespec_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void pin_release(struct pin *p)
{
	for (uint64_t i = p->first; i <= p->last; i++)
		cache_chunk_release(p->co, i);
	cache_object_unref(p->co);
	free(p);
}

static void *pin_main(void *arg)
{
	struct ferryfs *fs = arg;

	pthread_mutex_lock(&fs->pin_lock);
	while (!fs->pin_stop) {
		struct timespec now, next = { 0 };
		struct pin **pp = &fs->pins, *expired = NULL;

		clock_gettime(CLOCK_MONOTONIC, &now);
		while (*pp) {
			struct pin *p = *pp;

			if (!timespec_before(&now, &p->deadline)) {
				*pp = p->next;
				p->next = expired;
				expired = p;
				continue;
			}
			if (!next.tv_sec || timespec_before(&p->deadline, &next))
				next = p->deadline;
			pp = &p->next;
		}
		if (expired) {
			pthread_mutex_unlock(&fs->pin_lock);
			while (expired) {
				struct pin *p = expired;

				expired = p->next;
				pin_release(p);
			}
			pthread_mutex_lock(&fs->pin_lock);
			continue;
		}
		if (next.tv_sec)
			pthread_cond_timedwait(&fs->pin_cond, &fs->pin_lock, &next);
		else
			pthread_cond_wait(&fs->pin_cond, &fs->pin_lock);
	}
	pthread_mutex_unlock(&fs->pin_lock);
	return NULL;
}

int ferry_pins_start(struct ferryfs *fs)
{
	pthread_condattr_t ca;
	int ret;

	pthread_mutex_init(&fs->pin_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->pin_cond, &ca);
	pthread_condattr_destroy(&ca);
	ret = pthread_create(&fs->pin_thread, NULL, pin_main, fs);
	if (ret)
		return -ret;
	fs->pin_thread_started = true;
	return 0;
}

void ferry_pins_stop(struct ferryfs *fs)
{
	struct pin *p;

	if (!fs->pin_thread_started)
		return;
	pthread_mutex_lock(&fs->pin_lock);
	fs->pin_stop = true;
	pthread_cond_signal(&fs->pin_cond);
	pthread_mutex_unlock(&fs->pin_lock);
	pthread_join(fs->pin_thread, NULL);
	fs->pin_thread_started = false;
	while ((p = fs->pins)) {
		fs->pins = p->next;
		pin_release(p);
	}
	pthread_cond_destroy(&fs->pin_cond);
	pthread_mutex_destroy(&fs->pin_lock);
}

/* Acquires chunks [first, last] of co: they were just made resident, so each acquire is a
 * hit unless evicted in between, in which case we give the chunk back and report -EAGAIN. On
 * success the caller owns the pins (pin_hold hands them to the pin thread). */
static int pin_acquire(struct cache_object *co, uint64_t first, uint64_t last)
{
	uint64_t i;
	int ret = 0;

	for (i = first; i <= last; i++) {
		ret = cache_chunk_acquire(co, i, true);
		if (ret == CACHE_FETCH) {
			/* Fetched a moment ago, absent now: the cache could not store it (its
			 * volume is full or failing), or evicted it at once. */
			cache_chunk_fail(co, i, -EAGAIN);
			ret = -ENOSPC;
		}
		if (ret != CACHE_HIT)
			break;
	}
	if (i <= last) {
		while (i-- > first)
			cache_chunk_release(co, i);
		return ret < 0 ? ret : -EIO;
	}
	return 0;
}

/* Hands the caller's pins of chunks [first, last] of co to the pin thread, which releases
 * them hold_ms from now; on failure they are released here. */
static int pin_hold(struct ferryfs *fs, struct cache_object *co, uint64_t first, uint64_t last,
	uint32_t hold_ms)
{
	struct pin *p = calloc(1, sizeof(*p));

	if (!p) {
		for (uint64_t i = first; i <= last; i++)
			cache_chunk_release(co, i);
		return -ENOMEM;
	}
	p->co = cache_object_ref(co);
	p->first = first;
	p->last = last;
	clock_gettime(CLOCK_MONOTONIC, &p->deadline);
	timespec_add_ms(&p->deadline, hold_ms ? hold_ms : 30000);
	pthread_mutex_lock(&fs->pin_lock);
	p->next = fs->pins;
	fs->pins = p;
	pthread_cond_signal(&fs->pin_cond);
	pthread_mutex_unlock(&fs->pin_lock);
	return 0;
}

/* The block checksums of [r->offset, r->offset + len) into r, taken while the caller holds the
 * chunks pinned, so they are the sums of the bytes the cache holds for the range (a chunk
 * found damaged later is dropped, never rewritten in place). A chunk the cache could not
 * give sums for (cache_object_block_sums failed) leaves nr_sums 0: the loader then reads the
 * range through the mount. */
static void resident_sums(struct ferry_resident *r, struct cache_object *co, uint64_t len)
{
	int n = 0;

	_Static_assert(CACHE_BLOCK_BYTES == FERRY_RESIDENT_BLOCK_BYTES,
		"the ioctl's blocks are the cache's");
	r->sums_offset = r->offset / CACHE_BLOCK_BYTES * CACHE_BLOCK_BYTES;
	r->block_bytes = CACHE_BLOCK_BYTES;
	if (len)
		n = cache_object_block_sums(co, r->sums_offset, r->offset + len - r->sums_offset,
			r->sums, FERRY_RESIDENT_MAX_SUMS);
	r->nr_sums = n > 0 ? (uint32_t)n : 0;
}

static void ioctl_resident(fuse_req_t req, struct ferryfs *fs, struct fuse_file_info *fi,
	const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	struct ferry_file *f;
	struct ferry_resident *r;
	uint64_t len, first = 0, last = 0;
	int ret = 0;

	if (in_bufsz < sizeof(*r) || out_bufsz < sizeof(*r)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* 12 KiB with the sums: too large for a FUSE worker's stack to spend on it. */
	r = malloc(sizeof(*r));
	if (!r) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	f = file_of(fi);
	memcpy(r, in_buf, offsetof(struct ferry_resident, cache_path));
	memset(r->cache_path, 0, sizeof(*r) - offsetof(struct ferry_resident, cache_path));
	r->chunk_bytes = fs->chunk_bytes;
	r->file_size = f->obj.obj.size;
	len = r->offset >= r->file_size ? 0 : r->length;
	if (len > r->file_size - r->offset)
		len = r->file_size - r->offset;
	if (len) {
		first = r->offset / fs->chunk_bytes;
		last = (r->offset + len - 1) / fs->chunk_bytes;
		/* Two tries: a chunk evicted between becoming resident and being pinned is
		 * fetched again. */
		for (int tries = 0; tries < 3; tries++) {
			ret = fetcher_make_resident(fs->fetcher, f->co, r->offset, len);
			if (ret)
				break;
			ret = pin_acquire(f->co, first, last);
			if (ret != -EAGAIN)
				break;
		}
		if (ret == 0) {
			resident_sums(r, f->co, len);
			ret = pin_hold(fs, f->co, first, last, r->hold_ms);
		}
	} else {
		resident_sums(r, f->co, 0);
	}
	if (ret) {
		atomic_fetch_add(&fs->read_errors, 1);
		fuse_reply_err(req, ret == -ENOMEM || ret == -ENOSPC ? -ret : EIO);
		free(r);
		return;
	}
	snprintf(r->cache_path, sizeof(r->cache_path), "%s", cache_object_data_path(f->co));
	fuse_reply_ioctl(req, 0, r, sizeof(*r));
	free(r);
}

/* Checks every range of p against a file of size bytes before anything starts: a request
 * either is taken whole (as far as the readahead bound lets it) or changes nothing. */
static int prefetch_check(const struct ferry_prefetch *p, uint64_t size)
{
	if (p->nr_ranges > FERRY_PREFETCH_MAX_RANGES || p->flags)
		return -EINVAL;
	for (uint32_t i = 0; i < p->nr_ranges; i++) {
		const struct ferry_prefetch_range *r = &p->ranges[i];

		if (!r->length || r->length > UINT64_MAX - r->offset ||
			r->offset + r->length > size)
			return -EINVAL;
	}
	return 0;
}

/* Hands the chunks of p's ranges, in order, to the fetcher's readahead. Consecutive ranges
 * that share a chunk (samples lying end to end) ask for it once; one asked for again later is
 * skipped by the fetcher, present or in flight. Stops where the fetcher's bound stopped it. */
static void prefetch_ranges(struct ferryfs *fs, struct ferry_file *f, struct ferry_prefetch *p)
{
	const uint64_t chunk = fs->chunk_bytes;
	uint64_t prev_first = 0, prev_end = 0;
	uint32_t i;

	for (i = 0; i < p->nr_ranges; i++) {
		const struct ferry_prefetch_range *r = &p->ranges[i];
		uint64_t first = r->offset / chunk, end = (r->offset + r->length - 1) / chunk + 1;
		uint64_t next;

		if (first >= prev_first && first < prev_end) {
			/* The run of chunks goes on: its start was asked for already. */
			first = prev_end < end ? prev_end : end;
			if (end > prev_end)
				prev_end = end;
		} else {
			prev_first = first;
			prev_end = end;
		}
		if (first == end)
			continue;
		p->nr_started += fetcher_prefetch(fs->fetcher, f->co, first, end - first, &next);
		p->nr_chunks += (uint32_t)(next - first);
		if (next < end) {
			p->next_offset = next * chunk > r->offset ? next * chunk : r->offset;
			break;
		}
	}
	p->nr_done = i;
	if (i == p->nr_ranges)
		p->next_offset = i ? p->ranges[i - 1].offset + p->ranges[i - 1].length : 0;
}

static void ioctl_prefetch(fuse_req_t req, struct ferryfs *fs, struct fuse_file_info *fi,
	const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	struct ferry_file *f = file_of(fi);
	struct ferry_prefetch *p;
	struct cache_stats cs;
	int ret;

	if (in_bufsz < sizeof(*p) || out_bufsz < offsetof(struct ferry_prefetch, ranges)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* 16 KiB: too large for a FUSE worker's stack. */
	p = malloc(sizeof(*p));
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(p, in_buf, sizeof(*p));
	ret = prefetch_check(p, f->obj.obj.size);
	if (ret) {
		fuse_reply_err(req, -ret);
		free(p);
		return;
	}
	cache_get_stats(fs->cache, &cs);
	p->nr_done = p->nr_started = p->nr_chunks = 0;
	p->next_offset = 0;
	p->chunk_bytes = fs->chunk_bytes;
	p->file_size = f->obj.obj.size;
	p->cache_max_bytes = cs.max_bytes;
	prefetch_ranges(fs, f, p);
	/* The ranges are the caller's own: only the answer goes back. */
	fuse_reply_ioctl(req, 0, p, offsetof(struct ferry_prefetch, ranges));
	free(p);
}

void ferry_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
	struct fuse_file_info *fi, unsigned flags, const void *in_buf, size_t in_bufsz,
	size_t out_bufsz)
{
	struct ferryfs *fs = fs_of(req);

	count_op(fs, FERRY_OP_IOCTL);
	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (flags & FUSE_IOCTL_DIR) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	switch (cmd) {
	case FERRY_IOC_RESIDENT:
		ioctl_resident(req, fs, fi, in_buf, in_bufsz, out_bufsz);
		break;
	case FERRY_IOC_PREFETCH:
		ioctl_prefetch(req, fs, fi, in_buf, in_bufsz, out_bufsz);
		break;
	default:
		fuse_reply_err(req, ENOTTY);
	}
}
