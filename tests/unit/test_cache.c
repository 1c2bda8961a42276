/* Tests of the chunk cache: single flight, eviction, persistence and verification, on real
 * files under /tmp with both disk I/O backends; damage to the files, full and failing volumes,
 * permissions and huge objects. */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/cache.h"
#include "fs/io.h"
#include "fs/remote/remote.h"

#define CB (64u << 10) /* the smallest chunk size keeps tests small */

static char tmp_dir[64];
static char vol_dir[96];     /* a private tmpfs mounted by a test, "" when none */
static uint32_t cb_now = CB; /* the chunk size of the cache under test */

static void setup(void)
{
	strcpy(tmp_dir, "/tmp/ferry-test-cache-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp_dir));
}

static void teardown(void)
{
	char cmd[128];

	if (vol_dir[0]) {
		umount2(vol_dir, MNT_DETACH);
		vol_dir[0] = '\0';
	}

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", tmp_dir);
}

TestSuite(cache, .init = setup, .fini = teardown);

/* The independent oracle: byte k of object (path, version) is a hash of all three. */
static unsigned char src_byte(const char *path, const char *version, uint64_t k)
{
	uint64_t h = 1469598103934665603ull;

	for (const char *p = path; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (const char *p = version; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h ^= k * 0x9e3779b97f4a7c15ull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (unsigned char)h;
}

static void src_fill(const char *path, const char *version, uint64_t off, void *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		((unsigned char *)buf)[i] = src_byte(path, version, off + i);
}

static struct cache *open_cache(const struct io_backend *io, uint64_t max_bytes)
{
	struct cache_config cfg = { .dir = tmp_dir,
		.max_bytes = max_bytes,
		.chunk_bytes = CB,
		.io = io };
	struct cache *c = NULL;
	char err[256] = "";
	int rc = cache_open(&c, &cfg, err, sizeof(err));

	cr_assert_eq(rc, 0, "cache_open: %d %s", rc, err);
	return c;
}

/* cache_object_open of (path, size, version), the version being the object's ETag. */
static int obj_open(struct cache *c, const char *path, uint64_t size, const char *version,
	struct cache_object **o)
{
	struct remote_object obj = { .path = path, .size = size, .etag = version };

	return cache_object_open(c, &obj, version, o);
}

static struct cache_object *open_obj(struct cache *c, const char *path, uint64_t size,
	const char *version)
{
	struct cache_object *o = NULL;
	int rc = obj_open(c, path, size, version, &o);

	cr_assert_eq(rc, 0, "cache_object_open %s: %d", path, rc);
	return o;
}

static size_t len_of(struct cache_object *o, uint64_t idx)
{
	uint64_t size = cache_object_size(o), off = idx * cb_now;

	return size - off < cb_now ? (size_t)(size - off) : cb_now;
}

/* The fetcher's part, with the oracle's bytes. */
static int fill_from_src(struct cache_object *o, const char *path, const char *version,
	uint64_t idx)
{
	size_t len = len_of(o, idx);
	void *buf = malloc(len);
	int rc;

	cr_assert_not_null(buf);
	src_fill(path, version, idx * cb_now, buf, len);
	rc = cache_chunk_fill(o, idx, buf, len);
	free(buf);
	return rc;
}

/* Acquires chunk idx (fetching it from the oracle on a miss), checks its bytes against the
 * oracle and leaves it pinned. Returns CACHE_HIT or CACHE_FETCH. */
static int get_chunk(struct cache_object *o, const char *path, const char *version, uint64_t idx)
{
	size_t len = len_of(o, idx);
	unsigned char *got = malloc(len), *want = malloc(len);
	int rc = cache_chunk_acquire(o, idx, true);

	cr_assert(got && want);
	cr_assert(rc == CACHE_HIT || rc == CACHE_FETCH, "acquire %lu: %d", (unsigned long)idx, rc);
	if (rc == CACHE_FETCH)
		cr_assert_eq(fill_from_src(o, path, version, idx), 0);
	cr_assert_eq(cache_object_read(o, got, len, idx * cb_now), (ssize_t)len);
	src_fill(path, version, idx * cb_now, want, len);
	cr_assert_eq(memcmp(got, want, len), 0, "chunk %lu of %s has wrong bytes",
		(unsigned long)idx, path);
	free(got);
	free(want);
	return rc;
}

static int get_and_release(struct cache_object *o, const char *path, const char *version,
	uint64_t idx)
{
	int rc = get_chunk(o, path, version, idx);

	cache_chunk_release(o, idx);
	return rc;
}

static const struct io_backend *const *backends(int *n)
{
	static const struct io_backend *list[2];

	*n = 0;
	list[(*n)++] = &io_sync_backend;
#if HAVE_IO_URING
	if (io_default() == &io_uring_backend)
		list[(*n)++] = &io_uring_backend;
#endif
	return list;
}

static struct cache_stats stats(struct cache *c)
{
	struct cache_stats st;

	cache_get_stats(c, &st);
	return st;
}

/* Bytes the file really occupies on disk. */
static uint64_t disk_bytes(const char *path)
{
	struct stat sb;

	cr_assert_eq(stat(path, &sb), 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)sb.st_blocks * 512;
}

Test(cache, first_acquire_fetches_and_second_hits)
{
	int nr;
	const struct io_backend *const *io = backends(&nr);

	for (int b = 0; b < nr; b++) {
		struct cache *c = open_cache(io[b], 0);
		struct cache_object *o = open_obj(c, "/a/b.bin", 3 * CB, "etag-1");

		cr_assert_eq(get_and_release(o, "/a/b.bin", "etag-1", 1), CACHE_FETCH);
		cr_assert_eq(get_and_release(o, "/a/b.bin", "etag-1", 1), CACHE_HIT, "%s",
			io[b]->name);
		cr_assert_eq(stats(c).hits, 1);
		cr_assert_eq(stats(c).misses, 1);
		cr_assert_eq(cache_object_cached_bytes(o), CB);
		cache_object_unref(o);
		cache_free(c);
		teardown();
		setup();
	}
}

struct crowd {
	struct cache_object *o;
	pthread_barrier_t start;
	atomic_int nr_fetchers, nr_ok, nr_bad;
	atomic_int result_err;
	int fill; /* 1: the fetcher fills; 0: the fetcher fails with -ECONNRESET */
};

static void *crowd_thread(void *p)
{
	struct crowd *cw = p;
	unsigned char got[512];
	int rc;

	pthread_barrier_wait(&cw->start);
	rc = cache_chunk_acquire(cw->o, 2, true);
	if (rc == CACHE_FETCH) {
		atomic_fetch_add(&cw->nr_fetchers, 1);
		usleep(100000); /* let the others pile up behind this fetch */
		if (fill_from_src(cw->o, "/crowd", "v", 2) != 0) {
			atomic_fetch_add(&cw->nr_bad, 1);
			return NULL;
		}
	} else if (rc != CACHE_HIT) {
		atomic_fetch_add(&cw->nr_bad, 1);
		return NULL;
	}
	if (cache_object_read(cw->o, got, sizeof(got), 2 * CB + 100) != (ssize_t)sizeof(got))
		atomic_fetch_add(&cw->nr_bad, 1);
	for (size_t i = 0; i < sizeof(got); i++) {
		if (got[i] != src_byte("/crowd", "v", 2 * CB + 100 + i)) {
			atomic_fetch_add(&cw->nr_bad, 1);
			break;
		}
	}
	cache_chunk_release(cw->o, 2);
	atomic_fetch_add(&cw->nr_ok, 1);
	return NULL;
}

Test(cache, many_threads_on_one_absent_chunk_make_exactly_one_fetcher)
{
	enum { N = 12 };
	struct cache *c = open_cache(NULL, 0);
	struct crowd cw = { .o = open_obj(c, "/crowd", 4 * CB, "v") };
	pthread_t tids[N];

	pthread_barrier_init(&cw.start, NULL, N);
	for (int i = 0; i < N; i++)
		cr_assert_eq(pthread_create(&tids[i], NULL, crowd_thread, &cw), 0);
	for (int i = 0; i < N; i++)
		pthread_join(tids[i], NULL);
	cr_assert_eq(atomic_load(&cw.nr_fetchers), 1);
	cr_assert_eq(atomic_load(&cw.nr_bad), 0);
	cr_assert_eq(atomic_load(&cw.nr_ok), N);
	cr_assert_eq(stats(c).misses, 1);
	cr_assert_eq(stats(c).hits, N - 1);
	pthread_barrier_destroy(&cw.start);
	cache_object_unref(cw.o);
	cache_free(c);
}

struct waiter {
	struct cache_object *o;
	atomic_int *started;
	int rc;
};

static void *waiter_thread(void *p)
{
	struct waiter *w = p;

	atomic_fetch_add(w->started, 1);
	w->rc = cache_chunk_acquire(w->o, 0, true);
	if (w->rc == CACHE_FETCH)
		cache_chunk_fail(w->o, 0, -EPIPE); /* a late thread: not what the test wants */
	return NULL;
}

Test(cache, waiters_get_the_error_of_a_failed_fetch)
{
	enum { N = 6 };
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/err", CB, "v");
	struct waiter w[N];
	pthread_t tids[N];
	atomic_int started = 0;

	cr_assert_eq(cache_chunk_acquire(o, 0, true), CACHE_FETCH);
	cr_assert_eq(cache_chunk_acquire(o, 0, false), -EAGAIN);
	for (int i = 0; i < N; i++) {
		w[i] = (struct waiter){ .o = o, .started = &started };
		cr_assert_eq(pthread_create(&tids[i], NULL, waiter_thread, &w[i]), 0);
	}
	while (atomic_load(&started) < N)
		usleep(1000);
	usleep(300000); /* they are asleep in acquire by now */
	cache_chunk_fail(o, 0, -ECONNRESET);
	for (int i = 0; i < N; i++) {
		pthread_join(tids[i], NULL);
		cr_assert_eq(w[i].rc, -ECONNRESET, "waiter %d got %d", i, w[i].rc);
	}
	/* The chunk is absent: the next acquirer fetches it. */
	cr_assert_eq(get_and_release(o, "/err", "v", 0), CACHE_FETCH);
	cache_object_unref(o);
	cache_free(c);
}

static void *retry_thread(void *p)
{
	struct waiter *w = p;

	atomic_fetch_add(w->started, 1);
	w->rc = cache_chunk_acquire(w->o, 2, true);
	if (w->rc == CACHE_FETCH)
		cache_chunk_fail(w->o, 2, -EIO);
	return NULL;
}

Test(cache, waiters_become_fetchers_after_a_failed_fill)
{
	/* Limit one chunk, two pinned: a third fill cannot keep within one chunk over. */
	struct cache *c = open_cache(NULL, CB);
	struct cache_object *o = open_obj(c, "/full", 3 * CB, "v");
	struct waiter w = { .o = o };
	atomic_int started = 0;
	pthread_t tid;

	w.started = &started;
	get_chunk(o, "/full", "v", 0);
	get_chunk(o, "/full", "v", 1);
	cr_assert_eq(cache_chunk_acquire(o, 2, true), CACHE_FETCH);
	cr_assert_eq(pthread_create(&tid, NULL, retry_thread, &w), 0);
	while (atomic_load(&started) < 1)
		usleep(1000);
	usleep(200000);
	cr_assert_eq(fill_from_src(o, "/full", "v", 2), -ENOSPC);
	pthread_join(tid, NULL);
	cr_assert_eq(w.rc, CACHE_FETCH, "the waiter got %d", w.rc);
	cr_assert_leq(stats(c).used_bytes, CB + CB);
	cache_chunk_release(o, 0);
	cache_chunk_release(o, 1);
	/* With the pins gone there is room again. */
	cr_assert_eq(get_and_release(o, "/full", "v", 2), CACHE_FETCH);
	cr_assert_leq(stats(c).used_bytes, CB);
	cache_object_unref(o);
	cache_free(c);
}

struct copier {
	struct cache_object *o;
	atomic_int *started;
	uint64_t off; /* within chunk 1 */
	size_t len;
	unsigned char dst[CB];
	int rc;
};

static void *copier_thread(void *p)
{
	struct copier *w = p;

	atomic_fetch_add(w->started, 1);
	w->rc = cache_chunk_acquire_copy(w->o, 1, w->dst, CB + w->off, w->len);
	if (w->rc == CACHE_FETCH)
		cache_chunk_fail(w->o, 1, -EPIPE); /* a late thread: not what the test wants */
	else if (w->rc == CACHE_HIT)
		cache_chunk_release(w->o, 1);
	return NULL;
}

static void start_copiers(struct copier *w, pthread_t *tids, int n, struct cache_object *o,
	atomic_int *started)
{
	for (int i = 0; i < n; i++) {
		w[i] = (struct copier){ .o = o, .started = started };
		w[i].off = (uint64_t)i * 1000;
		w[i].len = CB - w[i].off - (size_t)i * 7;
		cr_assert_eq(pthread_create(&tids[i], NULL, copier_thread, &w[i]), 0);
	}
	while (atomic_load(started) < n)
		usleep(1000);
	usleep(200000); /* they are asleep in acquire by now */
}

Test(cache, waiters_copy_landed_bytes_before_the_chunk_is_stored)
{
	enum { N = 6 };
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/landed", 2 * CB, "v");
	unsigned char *buf = malloc(CB), want[CB];
	struct copier *w = calloc(N, sizeof(*w));
	pthread_t tids[N];
	atomic_int started = 0;

	cr_assert(buf && w);
	src_fill("/landed", "v", CB, buf, CB);
	memcpy(want, buf, CB);
	cr_assert_eq(cache_chunk_land(o, 1, buf, CB), -EINVAL, "nobody fetches it yet");
	cr_assert_eq(cache_chunk_acquire(o, 1, true), CACHE_FETCH);
	cr_assert_eq(cache_chunk_land(o, 1, buf, CB - 1), -EINVAL);
	start_copiers(w, tids, N, o, &started);
	cr_assert_eq(cache_chunk_land(o, 1, buf, CB), 0);
	/* Every waiter returns before the chunk is stored: they took the landed bytes. */
	for (int i = 0; i < N; i++) {
		pthread_join(tids[i], NULL);
		cr_assert_eq(w[i].rc, CACHE_COPIED, "waiter %d got %d", i, w[i].rc);
		cr_assert_eq(memcmp(w[i].dst, want + w[i].off, w[i].len), 0, "waiter %d bytes", i);
	}
	cr_assert_eq(cache_object_cached_bytes(o), 0);
	cr_assert_eq(cache_chunk_fill(o, 1, buf, CB), 0);
	memset(buf, 0, CB); /* the fetcher's to reuse once fill returned */
	cache_chunk_release(o, 1);
	cr_assert_eq(cache_object_cached_bytes(o), CB);
	cr_assert_eq(get_and_release(o, "/landed", "v", 1), CACHE_HIT);
	free(buf);
	free(w);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, copy_waiters_get_the_error_of_a_failed_fetch)
{
	enum { N = 4 };
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/landerr", 2 * CB, "v");
	struct copier *w = calloc(N, sizeof(*w));
	pthread_t tids[N];
	atomic_int started = 0;

	cr_assert_not_null(w);
	cr_assert_eq(cache_chunk_acquire(o, 1, true), CACHE_FETCH);
	start_copiers(w, tids, N, o, &started);
	cache_chunk_fail(o, 1, -ECONNRESET);
	for (int i = 0; i < N; i++) {
		pthread_join(tids[i], NULL);
		cr_assert_eq(w[i].rc, -ECONNRESET, "waiter %d got %d", i, w[i].rc);
	}
	cr_assert_eq(get_and_release(o, "/landerr", "v", 1), CACHE_FETCH);
	free(w);
	cache_object_unref(o);
	cache_free(c);
}

struct sync_loop {
	struct cache *c;
	atomic_bool stop;
	atomic_int nr_syncs;
};

static void *sync_loop_thread(void *p)
{
	struct sync_loop *s = p;

	while (!atomic_load(&s->stop)) {
		cache_sync(s->c);
		atomic_fetch_add(&s->nr_syncs, 1);
	}
	return NULL;
}

/* The daemon's syncer runs cache_sync every second while FUSE threads fill chunks (each
 * fill puts its object back on the dirty list). A sync must only drop the references it
 * took: an extra one closed the data file of an object still held open, and later reads of
 * it failed with EBADF. */
Test(cache, syncing_while_chunks_are_filled_keeps_held_objects_readable)
{
	enum { NR_OBJ = 8, NR_CHUNKS = 64 };
	struct cache *c = open_cache(NULL, 0);
	struct sync_loop s = { .c = c };
	struct cache_object *o[NR_OBJ];
	char path[NR_OBJ][16];
	pthread_t tid;

	for (int i = 0; i < NR_OBJ; i++) {
		snprintf(path[i], sizeof(path[i]), "/race%d", i);
		o[i] = open_obj(c, path[i], NR_CHUNKS * CB, "v");
	}
	cr_assert_eq(pthread_create(&tid, NULL, sync_loop_thread, &s), 0);
	/* The objects are filled in a new order each round (i -> i * 5 + idx, mod 8), so the
	 * dirty list is relinked unlike the one a sync in progress walks. */
	for (uint64_t idx = 0; idx < NR_CHUNKS; idx++) {
		for (int j = 0; j < NR_OBJ; j++) {
			int i = (int)((j * 5 + idx * (idx % 3 + 1)) % NR_OBJ);

			cr_assert_eq(get_and_release(o[i], path[i], "v", idx), CACHE_FETCH);
		}
	}
	atomic_store(&s.stop, true);
	pthread_join(tid, NULL);
	cr_assert_gt(atomic_load(&s.nr_syncs), 1, "the syncs never overlapped the fills");
	cr_assert_eq(cache_sync(c), 0);
	for (int i = 0; i < NR_OBJ; i++) {
		for (uint64_t idx = 0; idx < NR_CHUNKS; idx++)
			cr_assert_eq(get_and_release(o[i], path[i], "v", idx), CACHE_HIT);
		cache_object_unref(o[i]);
	}
	cache_free(c);
}

Test(cache, evicts_least_recently_used_chunk)
{
	struct cache *c = open_cache(NULL, 3 * CB);
	struct cache_object *a = open_obj(c, "/a", 4 * CB, "v");
	struct cache_object *b = open_obj(c, "/b", 4 * CB, "v");

	get_and_release(a, "/a", "v", 0);
	get_and_release(b, "/b", "v", 0);
	get_and_release(a, "/a", "v", 1);
	cr_assert_eq(get_and_release(a, "/a", "v", 0), CACHE_HIT); /* /a 0 is now the newest */
	get_and_release(b, "/b", "v", 1); /* evicts /b 0, the least recently used */
	cr_assert_eq(stats(c).evictions, 1);
	get_and_release(b, "/b", "v", 2); /* evicts /a 1 */
	cr_assert_eq(stats(c).evictions, 2);
	cr_assert_eq(cache_chunk_acquire(b, 0, false), CACHE_FETCH);
	cache_chunk_fail(b, 0, -EIO);
	cr_assert_eq(cache_chunk_acquire(a, 1, false), CACHE_FETCH);
	cache_chunk_fail(a, 1, -EIO);
	cr_assert_eq(get_and_release(a, "/a", "v", 0), CACHE_HIT);
	cr_assert_eq(get_and_release(b, "/b", "v", 1), CACHE_HIT);
	cr_assert_eq(get_and_release(b, "/b", "v", 2), CACHE_HIT);
	cr_assert_eq(stats(c).used_bytes, 3 * CB);
	/* Evicted bytes are holes: the data files hold 1 and 2 chunks. */
	cr_assert_eq(disk_bytes(cache_object_data_path(a)), CB);
	cr_assert_eq(disk_bytes(cache_object_data_path(b)), 2 * CB);
	cache_object_unref(a);
	cache_object_unref(b);
	cache_free(c);
}

Test(cache, pinned_chunks_are_never_evicted)
{
	struct cache *c = open_cache(NULL, 2 * CB);
	struct cache_object *o = open_obj(c, "/pin", 10 * CB, "v");
	unsigned char got[64];

	get_chunk(o, "/pin", "v", 0); /* stays pinned */
	for (uint64_t i = 1; i < 10; i++) {
		get_and_release(o, "/pin", "v", i);
		cr_assert_leq(stats(c).used_bytes, 2 * CB + CB);
	}
	cr_assert_eq(cache_object_read(o, got, sizeof(got), 10), (ssize_t)sizeof(got));
	for (size_t i = 0; i < sizeof(got); i++)
		cr_assert_eq(got[i], src_byte("/pin", "v", 10 + i));
	/* Releasing is a use: chunk 0 is now newer than 9, so 9 goes first. */
	cache_chunk_release(o, 0);
	get_and_release(o, "/pin", "v", 1);
	cr_assert_eq(cache_chunk_acquire(o, 9, false), CACHE_FETCH);
	cache_chunk_fail(o, 9, -EIO);
	cr_assert_eq(get_and_release(o, "/pin", "v", 0), CACHE_HIT);
	cache_object_unref(o);
	cache_free(c);
}

struct worker {
	struct cache *c;
	struct cache_object *objs[3];
	uint64_t seed;
	atomic_int *bad;
	atomic_int *over;
};

static const char *const work_paths[3] = { "/w0", "/w1", "/w2" };

static void *work_thread(void *p)
{
	struct worker *w = p;
	unsigned char *buf = malloc(CB), *want = malloc(CB);

	for (int i = 0; i < 400; i++) {
		uint64_t r, idx;
		int k, rc;
		size_t len;
		struct cache_stats st;

		w->seed ^= w->seed << 13;
		w->seed ^= w->seed >> 7;
		w->seed ^= w->seed << 17;
		r = w->seed;
		k = (int)(r % 3);
		idx = (r >> 8) % cache_object_nr_chunks(w->objs[k]);
		len = len_of(w->objs[k], idx);
		rc = cache_chunk_acquire(w->objs[k], idx, true);
		if (rc == CACHE_FETCH) {
			src_fill(work_paths[k], "v", idx * CB, buf, len);
			rc = cache_chunk_fill(w->objs[k], idx, buf, len);
			if (rc == -ENOSPC)
				continue; /* both threads' pins fill the cache: allowed */
		}
		if (rc < 0) {
			atomic_fetch_add(w->bad, 1);
			continue;
		}
		if (cache_object_read(w->objs[k], buf, len, idx * CB) != (ssize_t)len)
			atomic_fetch_add(w->bad, 1);
		src_fill(work_paths[k], "v", idx * CB, want, len);
		if (memcmp(buf, want, len) != 0)
			atomic_fetch_add(w->bad, 1);
		cache_chunk_release(w->objs[k], idx);
		cache_get_stats(w->c, &st);
		if (st.used_bytes > st.max_bytes + CB)
			atomic_fetch_add(w->over, 1);
	}
	free(buf);
	free(want);
	return NULL;
}

Test(cache, limit_is_never_exceeded_by_more_than_one_chunk_under_random_load)
{
	enum { MAX = 6 * CB, NR_THREADS = 3 };
	struct cache *c = open_cache(NULL, MAX);
	struct worker w[NR_THREADS];
	pthread_t tids[NR_THREADS];
	atomic_int bad = 0, over = 0;
	struct cache_object *objs[3];
	uint64_t disk = 0;

	objs[0] = open_obj(c, work_paths[0], 20 * CB, "v");
	objs[1] = open_obj(c, work_paths[1], 7 * CB + 1000, "v");
	objs[2] = open_obj(c, work_paths[2], 3000, "v");
	for (int t = 0; t < NR_THREADS; t++) {
		w[t] = (struct worker){ .c = c,
			.seed = 0x1234567ull * (t + 1),
			.bad = &bad,
			.over = &over };
		memcpy(w[t].objs, objs, sizeof(objs));
		cr_assert_eq(pthread_create(&tids[t], NULL, work_thread, &w[t]), 0);
	}
	for (int t = 0; t < NR_THREADS; t++)
		pthread_join(tids[t], NULL);
	cr_assert_eq(atomic_load(&bad), 0);
	cr_assert_eq(atomic_load(&over), 0);
	cr_assert_leq(stats(c).used_bytes, MAX);
	cr_assert_gt(stats(c).evictions, 0);
	/* What the disk holds agrees with the count (data files only; the 3000-byte object
	 * occupies one 4 KiB block). */
	for (int k = 0; k < 3; k++)
		disk += disk_bytes(cache_object_data_path(objs[k]));
	cr_assert_leq(disk, MAX + 4096, "data files hold %lu bytes", (unsigned long)disk);
	for (int k = 0; k < 3; k++) {
		uint64_t sum = 0;

		for (uint64_t i = 0; i < cache_object_nr_chunks(objs[k]); i++) {
			if (cache_chunk_acquire(objs[k], i, false) == CACHE_HIT) {
				sum += len_of(objs[k], i);
				cache_chunk_release(objs[k], i);
			} else {
				cache_chunk_fail(objs[k], i, -EIO);
			}
		}
		cr_assert_eq(sum, cache_object_cached_bytes(objs[k]));
		cache_object_unref(objs[k]);
	}
	cache_free(c);
}

Test(cache, synced_chunks_survive_free_and_reopen)
{
	int nr;
	const struct io_backend *const *io = backends(&nr);

	for (int b = 0; b < nr; b++) {
		struct cache *c = open_cache(io[b], 0);
		struct cache_object *o = open_obj(c, "/keep", 5 * CB + 77, "etag");

		for (uint64_t i = 1; i < 6; i += 2)
			get_and_release(o, "/keep", "etag", i); /* the last one is 77 bytes */
		cr_assert_eq(cache_sync(c), 0);
		cache_object_unref(o);
		cache_free(c);

		c = open_cache(io[b], 0);
		cr_assert_eq(stats(c).nr_objects, 1);
		cr_assert_eq(stats(c).nr_chunks, 3);
		cr_assert_eq(stats(c).used_bytes, 2 * CB + 77);
		o = open_obj(c, "/keep", 5 * CB + 77, "etag");
		cr_assert_eq(cache_object_cached_bytes(o), 2 * CB + 77);
		for (uint64_t i = 0; i < 6; i++)
			cr_assert_eq(get_and_release(o, "/keep", "etag", i),
				i % 2 ? CACHE_HIT : CACHE_FETCH, "%s chunk %lu", io[b]->name,
				(unsigned long)i);
		cr_assert_eq(stats(c).verify_failures, 0);
		cache_object_unref(o);
		cache_free(c);
		teardown();
		setup();
	}
}

Test(cache, corrupted_byte_is_detected_after_reopen_and_refetched)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/bad", 2 * CB, "v");
	char path[256];
	unsigned char x;
	int fd;

	get_and_release(o, "/bad", "v", 0);
	get_and_release(o, "/bad", "v", 1);
	cr_assert_eq(cache_sync(c), 0);
	snprintf(path, sizeof(path), "%s", cache_object_data_path(o));
	cache_object_unref(o);
	cache_free(c);

	fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &x, 1, CB + 1234), 1);
	x ^= 0x40;
	cr_assert_eq(pwrite(fd, &x, 1, CB + 1234), 1);
	close(fd);

	c = open_cache(NULL, 0);
	o = open_obj(c, "/bad", 2 * CB, "v");
	cr_assert_eq(get_and_release(o, "/bad", "v", 0), CACHE_HIT);
	/* Still present in the map, but its read checks the bytes and drops it. */
	cr_assert_eq(cache_chunk_acquire(o, 1, true), CACHE_HIT);
	cr_assert_eq(cache_object_read(o, &x, 1, CB + 1234), -EBADMSG);
	cache_chunk_release(o, 1);
	cr_assert_eq(stats(c).verify_failures, 1);
	cr_assert_eq(get_and_release(o, "/bad", "v", 1), CACHE_FETCH);
	cr_assert_eq(get_and_release(o, "/bad", "v", 1), CACHE_HIT);
	cr_assert_eq(stats(c).verify_failures, 1);
	cr_assert_eq(stats(c).used_bytes, 2 * CB);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, unsynced_chunks_are_absent_after_reopen)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/lost", 3 * CB, "v");
	char path[256];

	get_and_release(o, "/lost", "v", 0);
	cr_assert_eq(cache_sync(c), 0);
	get_and_release(o, "/lost", "v", 1); /* never synced */
	snprintf(path, sizeof(path), "%s", cache_object_data_path(o));
	cache_object_unref(o);
	cache_free(c);

	c = open_cache(NULL, 0);
	cr_assert_eq(stats(c).used_bytes, CB);
	/* The unsynced bytes were punched out when the cache was opened. */
	cr_assert_eq(disk_bytes(path), CB);
	o = open_obj(c, "/lost", 3 * CB, "v");
	cr_assert_eq(get_and_release(o, "/lost", "v", 0), CACHE_HIT);
	cr_assert_eq(get_and_release(o, "/lost", "v", 1), CACHE_FETCH);
	cr_assert_eq(stats(c).verify_failures, 0);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, cache_made_with_another_chunk_size_is_refused)
{
	struct cache_config cfg = { .dir = tmp_dir, .chunk_bytes = 2 * CB };
	struct cache *c = open_cache(NULL, 0), *c2 = NULL;
	char err[256] = "";

	cache_free(c);
	cr_assert_eq(cache_open(&c2, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_null(c2);
	cr_assert_not_null(strstr(err, "chunk size 65536"), "reason: %s", err);
	cfg.chunk_bytes = 3 * CB; /* not a power of two */
	cr_assert_eq(cache_open(&c2, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "power of two"), "reason: %s", err);
}

Test(cache, second_process_on_one_cache_is_refused)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_config cfg = { .dir = tmp_dir, .chunk_bytes = CB };
	struct cache *c2 = NULL;
	char err[256] = "";
	pid_t pid;
	int status;

	/* flock is per open file description: a second open in another process conflicts */
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(cache_open(&c2, &cfg, err, sizeof(err)) == -EBUSY ? 0 : 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cache_free(c);
}

Test(cache, a_second_process_waits_for_a_cache_that_is_being_let_go)
{
	struct cache_config cfg = { .dir = tmp_dir, .chunk_bytes = CB, .lock_wait_ms = 5000 };
	struct cache *c, *c2 = NULL;
	char err[256] = "", go;
	int status, ready[2];
	pid_t pid;

	/* As a remount right after an unmount: the old daemon lets go 300 ms after the new one
	 * asks. The child is forked first, so that it holds no copy of the lock's descriptor. */
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(ready[1]);
		if (read(ready[0], &go, 1) != 1)
			_exit(2);
		_exit(cache_open(&c2, &cfg, err, sizeof(err)) == 0 ? 0 : 1);
	}
	close(ready[0]);
	c = open_cache(NULL, 0);
	cr_assert_eq(write(ready[1], "x", 1), 1);
	usleep(300 * 1000);
	cache_free(c);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the second open did not wait");
	close(ready[1]);
}

Test(cache, new_version_replaces_the_old_one)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o1 = open_obj(c, "/f", 2 * CB, "v1"), *o2, *o3;
	char old_data[256];
	struct stat sb;

	get_and_release(o1, "/f", "v1", 0);
	get_and_release(o1, "/f", "v1", 1);
	snprintf(old_data, sizeof(old_data), "%s", cache_object_data_path(o1));
	cr_assert_eq(cache_sync(c), 0);

	/* While v1 is still read, its files stay; v2 starts empty. */
	o2 = open_obj(c, "/f", 2 * CB + 5, "v2");
	cr_assert_str_neq(cache_object_data_path(o2), old_data);
	cr_assert_eq(get_and_release(o1, "/f", "v1", 0), CACHE_HIT);
	cr_assert_eq(get_and_release(o2, "/f", "v2", 0), CACHE_FETCH);
	cr_assert_eq(stat(old_data, &sb), 0);
	cache_object_unref(o1);
	cr_assert_eq(stat(old_data, &sb), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(stats(c).nr_objects, 1);
	cr_assert_eq(stats(c).used_bytes, CB);
	cr_assert_eq(cache_sync(c), 0);
	cache_object_unref(o2);
	cache_free(c);

	/* After a restart, v3 evicts v2 right away (nobody reads v2). */
	c = open_cache(NULL, 0);
	cr_assert_eq(stats(c).nr_objects, 1);
	o3 = open_obj(c, "/f", 2 * CB, "v3");
	cr_assert_eq(stats(c).nr_objects, 1);
	cr_assert_eq(stats(c).used_bytes, 0);
	cr_assert_eq(get_and_release(o3, "/f", "v3", 1), CACHE_FETCH);
	cache_object_unref(o3);
	cache_free(c);
}

Test(cache, object_keeps_the_remote_identity_of_its_first_open)
{
	struct cache *c = open_cache(NULL, 0);
	char etag[] = "\"e1\"";
	struct remote_object a = { .path = "/id",
		.size = 3 * CB,
		.etag = etag,
		.mtime = { .tv_sec = 5 } };
	struct remote_object b = a, star = { .path = "/star", .size = CB, .etag = "*" };
	const struct remote_object *r;
	struct cache_object *o, *o2, *s, *bad;

	cr_assert_eq(cache_object_open(c, &a, etag, &o), 0);
	etag[1] = 'X'; /* the caller's strings are its own */
	r = cache_object_remote(o);
	cr_assert_str_eq(r->path, "/id");
	cr_assert_eq(r->size, 3 * CB);
	cr_assert_str_eq(r->etag, "\"e1\"");
	cr_assert_eq(r->mtime.tv_sec, 5);
	/* The same key again: the same object, the identity of its first open. */
	b.etag = "\"e1\"";
	b.mtime.tv_sec = 9;
	cr_assert_eq(cache_object_open(c, &b, "\"e1\"", &o2), 0);
	cr_assert_eq(o2, o);
	cr_assert_eq(cache_object_remote(o2)->mtime.tv_sec, 5);
	/* "*" names no version: it is not kept, so no fetch is pinned to it. */
	cr_assert_eq(cache_object_open(c, &star, "0.000000000", &s), 0);
	cr_assert_null(cache_object_remote(s)->etag);
	cr_assert_eq(cache_object_open(c, NULL, "v", &bad), -EINVAL);
	cache_object_unref(s);
	cache_object_unref(o2);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, last_chunk_is_shorter_and_must_be_filled_with_its_length)
{
	struct cache *c = open_cache(NULL, 0);
	uint64_t size = 2 * CB + 1000;
	struct cache_object *o = open_obj(c, "/short", size, "v");
	unsigned char *buf = calloc(1, CB), got[2000];

	cr_assert_eq(cache_object_nr_chunks(o), 3);
	cr_assert_eq(cache_chunk_acquire(o, 3, true), -EINVAL);
	cr_assert_eq(cache_chunk_acquire(o, 2, true), CACHE_FETCH);
	cr_assert_eq(cache_chunk_fill(o, 2, buf, CB), -EINVAL);
	src_fill("/short", "v", 2 * CB, buf, 1000);
	cr_assert_eq(cache_chunk_fill(o, 2, buf, 1000), 0);
	cr_assert_eq(cache_object_read(o, got, sizeof(got), 2 * CB), 1000);
	cr_assert_eq(memcmp(got, buf, 1000), 0);
	cr_assert_eq(cache_object_read(o, got, sizeof(got), size), 0);
	cache_chunk_release(o, 2);
	cr_assert_eq(stats(c).used_bytes, 1000);
	cr_assert_eq(cache_object_cached_bytes(o), 1000);
	free(buf);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, stats_count_hits_misses_evictions_and_objects)
{
	struct cache *c = open_cache(NULL, 2 * CB);
	struct cache_object *a = open_obj(c, "/s1", 3 * CB, "v");
	struct cache_object *b = open_obj(c, "/s2", 0, "v");
	struct cache_stats st;

	cr_assert_eq(cache_object_nr_chunks(b), 0);
	for (uint64_t i = 0; i < 3; i++)
		get_and_release(a, "/s1", "v", i);
	get_and_release(a, "/s1", "v", 2);
	st = stats(c);
	cr_assert_eq(st.nr_objects, 2);
	cr_assert_eq(st.misses, 3);
	cr_assert_eq(st.hits, 1);
	cr_assert_eq(st.evictions, 1);
	cr_assert_eq(st.nr_chunks, 2);
	cr_assert_eq(st.used_bytes, 2 * CB);
	cr_assert_eq(st.max_bytes, 2 * CB);
	cr_assert_eq(st.verify_failures, 0);
	cr_assert_eq(cache_chunk_bytes(c), CB);
	cache_object_unref(a);
	cache_object_unref(b);
	cache_free(c);
}

Test(cache, eviction_reaches_objects_not_opened_since_restart_in_lru_order)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *a = open_obj(c, "/old-a", 2 * CB, "v");
	struct cache_object *b = open_obj(c, "/old-b", 2 * CB, "v");
	struct cache_object *n;

	get_and_release(b, "/old-b", "v", 0);
	get_and_release(a, "/old-a", "v", 0);
	get_and_release(a, "/old-a", "v", 1);
	get_and_release(b, "/old-b", "v", 1);
	cr_assert_eq(cache_sync(c), 0);
	cache_object_unref(a);
	cache_object_unref(b);
	cache_free(c);

	/* A limit of three chunks: opening shrinks to it, dropping /old-b 0 (oldest). */
	c = open_cache(NULL, 3 * CB);
	cr_assert_eq(stats(c).used_bytes, 3 * CB);
	n = open_obj(c, "/new", CB, "v");
	get_and_release(n, "/new", "v", 0); /* evicts /old-a 0 */
	cr_assert_eq(stats(c).evictions, 2);
	a = open_obj(c, "/old-a", 2 * CB, "v");
	b = open_obj(c, "/old-b", 2 * CB, "v");
	cr_assert_eq(cache_object_cached_bytes(a), CB);
	cr_assert_eq(cache_object_cached_bytes(b), CB);
	cr_assert_eq(cache_chunk_acquire(b, 0, false), CACHE_FETCH);
	cache_chunk_fail(b, 0, -EIO);
	cr_assert_eq(cache_chunk_acquire(a, 0, false), CACHE_FETCH);
	cache_chunk_fail(a, 0, -EIO);
	cr_assert_eq(get_and_release(a, "/old-a", "v", 1), CACHE_HIT);
	cache_object_unref(a);
	cache_object_unref(b);
	cache_object_unref(n);
	cache_free(c);
}

Test(cache, objects_with_every_chunk_evicted_leave_no_files_after_reopen)
{
	/* A limit of one chunk: /gone's chunk is evicted by /kept's. */
	struct cache *c = open_cache(NULL, CB);
	struct cache_object *gone = open_obj(c, "/gone", CB, "v");
	struct cache_object *kept = open_obj(c, "/kept", CB, "v");
	char gone_map[PATH_MAX], gone_data[PATH_MAX], kept_map[PATH_MAX];

	get_and_release(gone, "/gone", "v", 0);
	cr_assert_eq(cache_sync(c), 0); /* /gone's map records its chunk */
	get_and_release(kept, "/kept", "v", 0);
	cr_assert_eq(stats(c).evictions, 1);
	snprintf(gone_data, sizeof(gone_data), "%s", cache_object_data_path(gone));
	snprintf(kept_map, sizeof(kept_map), "%s", cache_object_data_path(kept));
	/* The map lies beside the data file: H.data, H.map. */
	snprintf(gone_map, sizeof(gone_map), "%.*s.map", (int)strlen(gone_data) - 5, gone_data);
	strcpy(kept_map + strlen(kept_map) - 5, ".map");
	cr_assert_eq(cache_sync(c), 0);
	cache_object_unref(gone);
	cache_object_unref(kept);
	cache_free(c);
	cr_assert_eq(access(gone_map, F_OK), 0, "the map of an emptied object is there before");

	c = open_cache(NULL, CB);
	cr_assert_eq(stats(c).nr_objects, 1);
	cr_assert_neq(access(gone_map, F_OK), 0, "%s is still there", gone_map);
	cr_assert_neq(access(gone_data, F_OK), 0, "%s is still there", gone_data);
	cr_assert_eq(access(kept_map, F_OK), 0, "%s was removed", kept_map);
	kept = open_obj(c, "/kept", CB, "v");
	cr_assert_eq(cache_object_cached_bytes(kept), CB);
	cache_object_unref(kept);
	cache_free(c);
}

Test(cache, bad_arguments_are_refused)
{
	struct cache_config cfg = { .dir = tmp_dir, .chunk_bytes = 32u << 10 };
	struct cache *c = NULL;
	struct cache_object *o;
	char err[256] = "";

	cr_assert_eq(cache_open(&c, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0');
	c = open_cache(NULL, 0);
	o = open_obj(c, "/x", CB, "v");
	cr_assert_eq(cache_chunk_fill(o, 0, err, 10), -EINVAL); /* not the fetcher */
	cache_chunk_release(o, 0);                              /* not pinned: ignored */
	cache_object_unref(o);
	cache_free(c);
	cache_free(NULL);
	cache_object_unref(NULL);
}

/* ---- damage, full and failing volumes, permissions, huge objects ---- */

static struct cache *open_cache_at(const char *dir, const struct io_backend *io, uint64_t max_bytes,
	uint32_t chunk_bytes)
{
	struct cache_config cfg = { .dir = dir,
		.max_bytes = max_bytes,
		.chunk_bytes = chunk_bytes,
		.io = io };
	struct cache *c = NULL;
	char err[256] = "";
	int rc = cache_open(&c, &cfg, err, sizeof(err));

	cr_assert_eq(rc, 0, "cache_open %s: %d %s", dir, rc, err);
	cb_now = chunk_bytes;
	return c;
}

static void flip_byte(const char *path, uint64_t off)
{
	unsigned char x;
	int fd = open(path, O_RDWR);

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, &x, 1, (off_t)off), 1);
	x ^= 0x40;
	cr_assert_eq(pwrite(fd, &x, 1, (off_t)off), 1);
	close(fd);
}

static mode_t mode_of(const char *path)
{
	struct stat sb;

	cr_assert_eq(lstat(path, &sb), 0, "lstat %s: %s", path, strerror(errno));
	return sb.st_mode & 07777;
}

static void map_path_of(struct cache_object *o, char *out, size_t size)
{
	const char *data = cache_object_data_path(o);

	snprintf(out, size, "%.*s.map", (int)strlen(data) - 5, data);
}

/* Mounts a private tmpfs of the given size under tmp_dir; skips the test where mounting is
 * not allowed. */
static void mount_small_volume(const char *size)
{
	char opts[64];

	snprintf(vol_dir, sizeof(vol_dir), "%s/vol", tmp_dir);
	cr_assert_eq(mkdir(vol_dir, 0700), 0);
	snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
	if (mount("tmpfs", vol_dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
		vol_dir[0] = '\0';
		cr_skip_test("cannot mount a tmpfs here: %s", strerror(errno));
	}
}

/* stderr into a file for a while, to count log lines. */
static int capture_start(const char *path)
{
	int saved, fd;

	fflush(stderr);
	saved = dup(2);
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	cr_assert(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	return saved;
}

static int capture_count(int saved, const char *path, const char *needle)
{
	char text[65536];
	ssize_t n;
	int fd, count = 0;

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	cr_assert_geq(n, 0);
	text[n] = '\0';
	for (char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		count++;
	return count;
}

/* A disk that fails on demand: the sync twin, but each call returns -EIO while its switch is
 * on. */
static atomic_bool fail_reads, fail_writes, fail_syncs;

static ssize_t fault_pread(int fd, void *buf, size_t len, uint64_t off)
{
	return atomic_load(&fail_reads) ? -EIO : io_sync_backend.pread(fd, buf, len, off);
}

static ssize_t fault_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	return atomic_load(&fail_writes) ? -EIO : io_sync_backend.pwrite(fd, buf, len, off);
}

static int fault_fdatasync(int fd)
{
	return atomic_load(&fail_syncs) ? -EIO : io_sync_backend.fdatasync(fd);
}

static const struct io_backend fault_io = {
	.name = "fault",
	.pread = fault_pread,
	.pwrite = fault_pwrite,
	.fdatasync = fault_fdatasync,
};

Test(cache, flipped_byte_in_data_file_is_never_served)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/flip", 2 * CB, "v");
	unsigned char got[4096], flipped = (unsigned char)(src_byte("/flip", "v", CB + 100) ^ 0x40);

	get_and_release(o, "/flip", "v", 1); /* filled and read once: verified */
	flip_byte(cache_object_data_path(o), CB + 100);
	cr_assert_eq(cache_chunk_acquire(o, 1, true), CACHE_HIT);
	memset(got, 0xaa, sizeof(got));
	cr_assert_eq(cache_object_read(o, got, sizeof(got), CB), -EBADMSG);
	cr_assert_neq(got[100], flipped, "the flipped byte reached the buffer");
	cache_chunk_release(o, 1);
	cr_assert_eq(stats(c).verify_failures, 1);
	cr_assert_eq(stats(c).used_bytes, 0);
	cr_assert_eq(cache_object_cached_bytes(o), 0);
	/* Dropped: fetched again, right bytes. */
	cr_assert_eq(get_and_release(o, "/flip", "v", 1), CACHE_FETCH);
	cr_assert_eq(get_and_release(o, "/flip", "v", 1), CACHE_HIT);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, hole_punched_under_a_verified_chunk_is_refetched)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/hole", 3 * CB, "v");
	unsigned char got[CB];
	int fd;

	get_and_release(o, "/hole", "v", 2);
	fd = open(cache_object_data_path(o), O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * CB, CB), 0);
	close(fd);
	cr_assert_eq(cache_chunk_acquire(o, 2, true), CACHE_HIT);
	cr_assert_eq(cache_object_read(o, got, CB, 2 * CB), -EBADMSG);
	cache_chunk_release(o, 2);
	cr_assert_eq(stats(c).verify_failures, 1);
	cr_assert_eq(get_and_release(o, "/hole", "v", 2), CACHE_FETCH);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, damaged_block_fails_only_the_reads_that_cover_it)
{
	enum { CB4 = 4 * CB };
	struct cache *c = open_cache_at(tmp_dir, NULL, 0, CB4);
	struct cache_object *o = open_obj(c, "/blocks", CB4, "v");
	unsigned char *got = malloc(CB4), *want = malloc(CB4);

	cr_assert(got && want);
	src_fill("/blocks", "v", 0, want, CB4);
	get_chunk(o, "/blocks", "v", 0); /* stays pinned */
	flip_byte(cache_object_data_path(o), 2 * CB + 7);
	/* Blocks 0, 1 and 3, whole or in part, aligned or not, are still right. */
	cr_assert_eq(cache_object_read(o, got, 2 * CB, 0), 2 * CB);
	cr_assert_eq(memcmp(got, want, 2 * CB), 0);
	cr_assert_eq(cache_object_read(o, got, 1000, 3 * CB + 5), 1000);
	cr_assert_eq(memcmp(got, want + 3 * CB + 5, 1000), 0);
	cr_assert_eq(cache_object_read(o, got, 10, 2 * CB - 10), 10);
	cr_assert_eq(stats(c).verify_failures, 0);
	/* A read that touches block 2 by one byte fails. */
	cr_assert_eq(cache_object_read(o, got, 11, 2 * CB - 10), -EBADMSG);
	cr_assert_eq(stats(c).verify_failures, 1);
	cache_chunk_release(o, 0);
	cr_assert_eq(cache_chunk_acquire(o, 0, false), CACHE_FETCH);
	cache_chunk_fail(o, 0, -EIO);
	free(got);
	free(want);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, reads_at_any_offset_and_length_return_the_right_bytes)
{
	enum { CB4 = 4 * CB };
	uint64_t size = 3 * CB4 + 5000;
	struct cache *c = open_cache_at(tmp_dir, NULL, 0, CB4);
	struct cache_object *o = open_obj(c, "/any", size, "v");
	unsigned char *got = malloc(2 * CB4), *want = malloc(size);
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	cr_assert(got && want);
	src_fill("/any", "v", 0, want, size);
	for (uint64_t i = 0; i < 4; i++)
		get_chunk(o, "/any", "v", i); /* all pinned */
	for (int t = 0; t < 2000; t++) {
		uint64_t off, len;
		ssize_t n;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		off = seed % size;
		len = (seed >> 32) % (t % 3 ? 3000 : 2 * CB4);
		if (t % 5 == 0)
			off &= ~(uint64_t)(CB - 1); /* aligned starts too */
		n = cache_object_read(o, got, len, off);
		cr_assert_eq(n, (ssize_t)(len < size - off ? len : size - off), "read %lu at %lu",
			(unsigned long)len, (unsigned long)off);
		cr_assert_eq(memcmp(got, want + off, (size_t)n), 0, "read %lu at %lu: wrong bytes",
			(unsigned long)len, (unsigned long)off);
	}
	cr_assert_eq(stats(c).verify_failures, 0);
	for (uint64_t i = 0; i < 4; i++)
		cache_chunk_release(o, i);
	free(got);
	free(want);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, block_sums_are_the_xxh3_of_each_block_of_present_chunks)
{
	enum { CB4 = 4 * CB };
	uint64_t size = 3 * CB4 + 100000; /* the last chunk: one whole block and a short one */
	struct cache *c = open_cache_at(tmp_dir, NULL, 0, CB4);
	struct cache_object *o = open_obj(c, "/sums", size, "v");
	unsigned char *want = malloc(size);
	uint64_t sums[32];

	cr_assert_not_null(want);
	src_fill("/sums", "v", 0, want, size);
	get_chunk(o, "/sums", "v", 0);
	get_chunk(o, "/sums", "v", 2);
	get_chunk(o, "/sums", "v", 3);
	cr_assert_eq(cache_object_block_sums(o, 0, CB4, sums, 32), 4);
	for (int k = 0; k < 4; k++)
		cr_assert_eq(sums[k], XXH3_64bits(want + (uint64_t)k * CB, CB), "block %d", k);
	cr_assert_eq(cache_object_block_sums(o, 2 * CB4 + CB, UINT64_MAX, sums, 32), 3 + 2);
	for (int k = 0; k < 5; k++) {
		uint64_t off = 2 * CB4 + CB + (uint64_t)k * CB;
		uint64_t len = size - off < CB ? size - off : CB;

		cr_assert_eq(sums[k], XXH3_64bits(want + off, len), "block %d", k);
	}
	cr_assert_eq(cache_object_block_sums(o, 2 * CB4, size, sums, 3), 3);
	cr_assert_eq(cache_object_block_sums(o, 100, CB, sums, 32), -EINVAL);
	cr_assert_eq(cache_object_block_sums(o, 0, size, sums, 32), -EINVAL); /* 1 is absent */
	cr_assert_eq(cache_object_block_sums(o, 4 * CB4, CB, sums, 32), 0);   /* past the end */
	for (uint64_t i = 0; i < 4; i++)
		if (i != 1)
			cache_chunk_release(o, i);
	free(want);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, chunk_dropped_under_two_holders_is_evictable_once_both_release)
{
	struct cache *c = open_cache(NULL, CB);
	struct cache_object *o = open_obj(c, "/two", 2 * CB, "v");
	unsigned char got[64];

	get_chunk(o, "/two", "v", 0);                             /* holder A */
	cr_assert_eq(cache_chunk_acquire(o, 0, true), CACHE_HIT); /* holder B */
	flip_byte(cache_object_data_path(o), 10);
	cr_assert_eq(cache_object_read(o, got, sizeof(got), 0), -EBADMSG); /* A drops it */
	cr_assert_eq(cache_object_read(o, got, sizeof(got), 0), -EBADMSG); /* B: not present */
	cr_assert_eq(stats(c).verify_failures, 1);
	cache_chunk_release(o, 0); /* A */
	/* Fetched again while B still holds it. */
	cr_assert_eq(get_and_release(o, "/two", "v", 0), CACHE_FETCH);
	cache_chunk_release(o, 0); /* B */
	/* No pin is left over: filling chunk 1 under a one-chunk limit evicts chunk 0. */
	get_and_release(o, "/two", "v", 1);
	cr_assert_eq(stats(c).evictions, 1);
	cr_assert_eq(cache_chunk_acquire(o, 0, false), CACHE_FETCH);
	cache_chunk_fail(o, 0, -EIO);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, failing_disk_read_drops_the_chunk_and_counts_a_disk_error)
{
	struct cache *c = open_cache(&fault_io, 0);
	struct cache_object *o = open_obj(c, "/eio", CB, "v");
	unsigned char got[100];

	get_and_release(o, "/eio", "v", 0);
	cr_assert_eq(cache_chunk_acquire(o, 0, true), CACHE_HIT);
	atomic_store(&fail_reads, true);
	cr_assert_eq(cache_object_read(o, got, sizeof(got), 0), -EBADMSG);
	atomic_store(&fail_reads, false);
	cache_chunk_release(o, 0);
	cr_assert_eq(stats(c).verify_failures, 1);
	cr_assert_eq(stats(c).disk_errors, 1);
	cr_assert_eq(get_and_release(o, "/eio", "v", 0), CACHE_FETCH);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, failing_disk_writes_degrade_the_cache_with_one_warning)
{
	char log[128];
	struct cache *c = open_cache(&fault_io, 0);
	struct cache_object *o = open_obj(c, "/wfail", 20 * CB, "v"), *o2;
	int saved, nr_eio = 0, nr_erofs = 0;

	snprintf(log, sizeof(log), "%s/log", tmp_dir);
	get_and_release(o, "/wfail", "v", 0); /* stored while the disk works */
	atomic_store(&fail_writes, true);
	saved = capture_start(log);
	for (uint64_t i = 1; i < 20; i++) {
		int rc;

		cr_assert_eq(cache_chunk_acquire(o, i, true), CACHE_FETCH);
		rc = fill_from_src(o, "/wfail", "v", i);
		if (rc == -EIO)
			nr_eio++;
		else if (rc == -EROFS)
			nr_erofs++;
		else
			cr_assert_fail("fill %lu: %d", (unsigned long)i, rc);
	}
	cr_assert_eq(capture_count(saved, log, "degraded"), 1, "not one warning");
	cr_assert_eq(nr_eio, 8, "writes tried before degrading: %d", nr_eio);
	cr_assert_eq(nr_erofs, 11);
	cr_assert(stats(c).degraded);
	cr_assert_eq(stats(c).disk_errors, 8);
	/* Degraded: opens still work, what is present is still read. */
	o2 = open_obj(c, "/other", CB, "v");
	cr_assert_eq(cache_chunk_acquire(o2, 0, true), CACHE_FETCH);
	cr_assert_eq(fill_from_src(o2, "/other", "v", 0), -EROFS);
	cr_assert_eq(get_and_release(o, "/wfail", "v", 0), CACHE_HIT);
	cache_object_unref(o2);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, failing_map_sync_leaves_the_last_good_map_in_force)
{
	struct cache *c = open_cache(&fault_io, 0);
	struct cache_object *o = open_obj(c, "/sync", 4 * CB, "v");

	get_and_release(o, "/sync", "v", 0);
	cr_assert_eq(cache_sync(c), 0);
	get_and_release(o, "/sync", "v", 1);
	get_and_release(o, "/sync", "v", 2);
	atomic_store(&fail_syncs, true);
	cr_assert_eq(cache_sync(c), -EIO);
	atomic_store(&fail_writes, true);
	atomic_store(&fail_syncs, false);
	cr_assert_eq(cache_sync(c), -EIO);
	atomic_store(&fail_writes, false);
	cr_assert_geq(stats(c).disk_errors, 2);
	cache_object_unref(o);
	cache_free(c);

	c = open_cache(NULL, 0);
	o = open_obj(c, "/sync", 4 * CB, "v");
	cr_assert_eq(get_and_release(o, "/sync", "v", 0), CACHE_HIT);
	cr_assert_eq(get_and_release(o, "/sync", "v", 1), CACHE_FETCH);
	cr_assert_eq(get_and_release(o, "/sync", "v", 2), CACHE_FETCH);
	cr_assert_eq(stats(c).verify_failures, 0);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, full_volume_never_fails_an_open)
{
	enum { NR_OBJ = 120, NR_CHUNKS = 2 };
	struct cache *c;
	int nr_stored = 0, nr_failed = 0;

	mount_small_volume("2m");
	c = open_cache_at(vol_dir, NULL, 0, CB); /* no limit: only the volume stops it */
	for (int i = 0; i < NR_OBJ; i++) {
		char path[32];
		struct cache_object *o;
		int rc;

		snprintf(path, sizeof(path), "/full%d", i);
		rc = obj_open(c, path, NR_CHUNKS * CB, "v", &o);
		cr_assert_eq(rc, 0, "open %d failed: %d", i, rc);
		for (uint64_t k = 0; k < NR_CHUNKS; k++) {
			cr_assert_eq(cache_chunk_acquire(o, k, true), CACHE_FETCH);
			rc = fill_from_src(o, path, "v", k);
			if (rc < 0) {
				cr_assert(rc == -ENOSPC || rc == -EROFS, "fill: %d", rc);
				nr_failed++;
				continue;
			}
			nr_stored++;
			/* A stored chunk reads back right (get_chunk checks against the oracle). */
			cache_chunk_release(o, k);
			cr_assert_eq(get_and_release(o, path, "v", k), CACHE_HIT);
		}
		if (i % 10 == 9)
			cache_sync(c); /* maps take room too; a failure is retried later */
		cache_object_unref(o);
	}
	cr_log_info("stored %d, failed %d, evictions %lu, degraded %d", nr_stored, nr_failed,
		(unsigned long)stats(c).evictions, stats(c).degraded);
	cr_assert_gt(stats(c).evictions, 0, "nothing was evicted to make room");
	cr_assert_gt(stats(c).disk_errors, 0, "the volume never said it was full");
	cr_assert_gt(nr_stored, NR_OBJ * NR_CHUNKS / 2, "stored only %d", nr_stored);
	cr_assert_leq(stats(c).used_bytes, 2u << 20);
	cache_free(c);
}

Test(cache, full_volume_with_every_chunk_pinned_degrades_and_keeps_serving)
{
	enum { NR = 48 };
	char log[128];
	struct cache *c;
	struct cache_object *o, *o2;
	int saved, nr_stored = 0, nr_full = 0, nr_erofs = 0;
	bool stored[NR] = { false };

	mount_small_volume("2m");
	c = open_cache_at(vol_dir, NULL, 0, CB);
	o = open_obj(c, "/pinned", NR * CB, "v");
	snprintf(log, sizeof(log), "%s/log", tmp_dir);
	saved = capture_start(log);
	for (uint64_t i = 0; i < NR; i++) {
		int rc;

		cr_assert_eq(cache_chunk_acquire(o, i, true), CACHE_FETCH);
		rc = fill_from_src(o, "/pinned", "v", i); /* stays pinned when stored */
		if (rc == 0) {
			stored[i] = true;
			nr_stored++;
		} else if (rc == -ENOSPC) {
			nr_full++;
		} else if (rc == -EROFS) {
			nr_erofs++;
		} else {
			cr_assert_fail("fill %lu: %d", (unsigned long)i, rc);
		}
	}
	cr_assert_eq(capture_count(saved, log, "degraded"), 1);
	cr_assert(stats(c).degraded);
	cr_assert_gt(nr_stored, 0);
	cr_assert_eq(nr_full, 8);
	cr_assert_gt(nr_erofs, 0);
	/* Every stored chunk still reads right; opens still work. */
	for (uint64_t i = 0; i < NR; i++) {
		if (!stored[i])
			continue;
		cache_chunk_release(o, i);
		cr_assert_eq(get_and_release(o, "/pinned", "v", i), CACHE_HIT);
	}
	o2 = open_obj(c, "/after", CB, "v");
	cr_assert_eq(cache_chunk_acquire(o2, 0, true), CACHE_FETCH);
	cr_assert_eq(fill_from_src(o2, "/after", "v", 0), -EROFS);
	cache_sync(c);
	cache_object_unref(o2);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, files_are_private_under_umask_000)
{
	char dir[128], path[PATH_MAX], sub[PATH_MAX];
	struct cache *c;
	struct cache_object *o;
	mode_t old = umask(0);

	snprintf(dir, sizeof(dir), "%s/new/cache", tmp_dir);
	c = open_cache_at(dir, NULL, 0, CB);
	o = open_obj(c, "/priv", 2 * CB, "v");
	get_and_release(o, "/priv", "v", 0);
	cr_assert_eq(cache_sync(c), 0);
	umask(old);
	cr_assert_eq(mode_of(dir), 0700, "cache dir %o", mode_of(dir));
	snprintf(path, sizeof(path), "%s/meta", dir);
	cr_assert_eq(mode_of(path), 0600, "meta %o", mode_of(path));
	cr_assert_eq(mode_of(cache_object_data_path(o)), 0600);
	map_path_of(o, path, sizeof(path));
	cr_assert_eq(mode_of(path), 0600, "map %o", mode_of(path));
	snprintf(sub, sizeof(sub), "%.*s", (int)(strrchr(path, '/') - path), path);
	cr_assert_eq(mode_of(sub), 0700, "%s %o", sub, mode_of(sub));
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, existing_cache_dir_and_files_are_made_private)
{
	char dir[128], path[PATH_MAX];
	struct cache *c;
	struct cache_object *o;

	snprintf(dir, sizeof(dir), "%s/open", tmp_dir);
	cr_assert_eq(mkdir(dir, 0777), 0);
	cr_assert_eq(chmod(dir, 0777), 0);
	c = open_cache_at(dir, NULL, 0, CB);
	cr_assert_eq(mode_of(dir), 0700);
	o = open_obj(c, "/p", CB, "v");
	get_and_release(o, "/p", "v", 0);
	cr_assert_eq(cache_sync(c), 0);
	map_path_of(o, path, sizeof(path));
	cache_object_unref(o);
	cache_free(c);
	cr_assert_eq(chmod(path, 0666), 0);
	c = open_cache_at(dir, NULL, 0, CB);
	cr_assert_eq(mode_of(path), 0600);
	cache_free(c);
}

/* Fills and syncs one chunk of /own, leaving its file names in map and data. */
static void make_one_cached_object(char *map, char *data, size_t size)
{
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = open_obj(c, "/own", CB, "v");

	get_and_release(o, "/own", "v", 0);
	cr_assert_eq(cache_sync(c), 0);
	map_path_of(o, map, size);
	snprintf(data, size, "%s", cache_object_data_path(o));
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, map_owned_by_another_user_is_discarded)
{
	char map[PATH_MAX], data[PATH_MAX];
	struct cache *c;
	struct cache_object *o;

	make_one_cached_object(map, data, sizeof(map));
	cr_assert_eq(chown(map, 12345, 12345), 0);
	c = open_cache(NULL, 0);
	cr_assert_eq(stats(c).nr_objects, 0);
	cr_assert_neq(access(map, F_OK), 0, "%s is still there", map);
	o = open_obj(c, "/own", CB, "v");
	cr_assert_eq(get_and_release(o, "/own", "v", 0), CACHE_FETCH);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, data_file_owned_by_another_user_is_discarded)
{
	char map[PATH_MAX], data[PATH_MAX];
	struct cache *c;

	make_one_cached_object(map, data, sizeof(map));
	cr_assert_eq(chown(data, 12345, 12345), 0);
	c = open_cache(NULL, 0);
	cr_assert_eq(stats(c).nr_objects, 0);
	cr_assert_eq(stats(c).used_bytes, 0);
	cr_assert_neq(access(map, F_OK), 0);
	cache_free(c);
}

Test(cache, map_that_does_not_parse_is_discarded)
{
	char map[PATH_MAX], data[PATH_MAX], junk[700];
	struct cache *c;
	int fd;

	make_one_cached_object(map, data, sizeof(map));
	fd = open(map, O_WRONLY);
	cr_assert_geq(fd, 0);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	cr_assert_eq(pwrite(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	close(fd);
	c = open_cache(NULL, 0);
	cr_assert_eq(stats(c).nr_objects, 0);
	cr_assert_neq(access(map, F_OK), 0);
	cr_assert_neq(access(data, F_OK), 0);
	cache_free(c);
}

Test(cache, cache_dir_owned_by_another_user_is_refused)
{
	struct cache_config cfg = { .dir = tmp_dir, .chunk_bytes = CB };
	struct cache *c = NULL;
	char err[256] = "";

	cr_assert_eq(chown(tmp_dir, 12345, 12345), 0);
	cr_assert_eq(cache_open(&c, &cfg, err, sizeof(err)), -EPERM);
	cr_assert_null(c);
	cr_assert_not_null(strstr(err, "owned by uid 12345"), "reason: %s", err);
	cr_assert_null(strchr(err, '\n'));
	cr_assert_eq(chown(tmp_dir, 0, 0), 0);
}

Test(cache, format_1_cache_is_discarded_and_rebuilt)
{
	char path[PATH_MAX], log[128], text[64] = "";
	struct cache *c;
	int fd, saved;

	/* What format 1 left: its meta and a map and data file in a bucket folder. */
	snprintf(path, sizeof(path), "%s/meta", tmp_dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	cr_assert_eq(write(fd, "ferry-cache 1\nchunk_bytes 65536\n", 32), 32);
	close(fd);
	snprintf(path, sizeof(path), "%s/ab", tmp_dir);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/ab/ab00000000000000.map", tmp_dir);
	close(open(path, O_CREAT | O_WRONLY, 0644));
	snprintf(path, sizeof(path), "%s/ab/ab00000000000000.data", tmp_dir);
	close(open(path, O_CREAT | O_WRONLY, 0644));
	snprintf(log, sizeof(log), "%s/log", tmp_dir);
	saved = capture_start(log);
	c = open_cache(NULL, 0);
	cr_assert_eq(capture_count(saved, log, "format 1"), 1);
	cr_assert_eq(stats(c).nr_objects, 0);
	cr_assert_neq(access(path, F_OK), 0, "%s is still there", path);
	snprintf(path, sizeof(path), "%s/meta", tmp_dir);
	fd = open(path, O_RDONLY);
	cr_assert_gt(read(fd, text, sizeof(text) - 1), 0);
	close(fd);
	cr_assert_eq(strncmp(text, "ferry-cache 2\n", 14), 0, "meta: %s", text);
	cr_assert_eq(mode_of(path), 0600);
	cache_free(c);
	c = open_cache(NULL, 0); /* and it opens again as format 2 */
	cache_free(c);
}

static size_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* A listing may claim any size: memory follows the chunks touched. The chunk state of
 * 2^45 bytes in 64 KiB chunks would be 2^29 entries (tens of GB); a few chunks must cost
 * kilobytes, on open, on reads, and on loading the map again. */
Test(cache, huge_claimed_size_allocates_by_touch)
{
	const uint64_t size = 1ull << 45, nr = size / CB;
	const uint64_t touch[] = { 0, 1, nr / 2, nr - 1 };
	struct cache *c;
	struct cache_object *o;
	size_t before, grown;

	mount_small_volume("16m"); /* tmpfs: a sparse file of 2^45 bytes is allowed */
	c = open_cache_at(vol_dir, NULL, 0, CB);
	before = heap_bytes();
	o = open_obj(c, "/huge", size, "v");
	cr_assert_eq(cache_object_nr_chunks(o), nr);
	for (size_t i = 0; i < sizeof(touch) / sizeof(touch[0]); i++)
		cr_assert_eq(get_and_release(o, "/huge", "v", touch[i]), CACHE_FETCH);
	grown = heap_bytes() - before;
	cr_assert_lt(grown, 1u << 20, "touching 4 chunks grew the heap by %zu bytes", grown);
	cr_assert_eq(cache_sync(c), 0);
	cache_object_unref(o);
	cache_free(c);

	before = heap_bytes();
	c = open_cache_at(vol_dir, NULL, 0, CB);
	cr_assert_eq(stats(c).nr_chunks, 4);
	o = open_obj(c, "/huge", size, "v");
	for (size_t i = 0; i < sizeof(touch) / sizeof(touch[0]); i++)
		cr_assert_eq(get_and_release(o, "/huge", "v", touch[i]), CACHE_HIT);
	grown = heap_bytes() - before;
	cr_assert_lt(grown, 1u << 20, "loading 4 chunks grew the heap by %zu bytes", grown);
	cache_object_unref(o);
	cache_free(c);
}

/* The largest size a listing may give: no file system here holds a sparse file that long,
 * so the object has no files; it still opens, and its chunks are fetched, not stored. */
Test(cache, largest_allowed_size_opens_and_is_fetched_without_storing)
{
	const uint64_t size = UINT64_MAX >> 1;
	struct cache *c = open_cache(NULL, 0);
	struct cache_object *o = NULL;
	size_t before = heap_bytes(), grown;
	unsigned char buf[CB];

	cr_assert_eq(obj_open(c, "/max", size + 1, "v", &o), -EFBIG);
	o = open_obj(c, "/max", size, "v");
	cr_assert_eq(cache_chunk_acquire(o, 12345, true), CACHE_FETCH);
	src_fill("/max", "v", 12345ull * CB, buf, CB);
	cr_assert_lt(cache_chunk_fill(o, 12345, buf, CB), 0);
	cr_assert_eq(cache_chunk_acquire(o, 12345, true), CACHE_FETCH);
	cache_chunk_fail(o, 12345, -EIO);
	grown = heap_bytes() - before;
	cr_assert_lt(grown, 1u << 20, "grew the heap by %zu bytes", grown);
	cr_assert_gt(stats(c).disk_errors, 0);
	cache_object_unref(o);
	cache_free(c);
}

Test(cache, temporary_files_left_by_a_killed_process_are_removed_on_open)
{
	char map[PATH_MAX], data[PATH_MAX], tmp[PATH_MAX + 8], meta_tmp[PATH_MAX];
	struct cache *c;

	make_one_cached_object(map, data, sizeof(map));
	snprintf(tmp, sizeof(tmp), "%s.tmp", map);
	close(open(tmp, O_CREAT | O_WRONLY, 0600));
	snprintf(meta_tmp, sizeof(meta_tmp), "%s/meta.99999", tmp_dir);
	close(open(meta_tmp, O_CREAT | O_WRONLY, 0600));
	c = open_cache(NULL, 0);
	cr_assert_neq(access(tmp, F_OK), 0, "%s is still there", tmp);
	cr_assert_neq(access(meta_tmp, F_OK), 0, "%s is still there", meta_tmp);
	cr_assert_eq(stats(c).nr_objects, 1); /* the real map is kept */
	cache_free(c);
}

Test(cache, object_emptied_before_its_first_sync_leaves_no_files_after_reopen)
{
	struct cache *c = open_cache(NULL, CB);
	struct cache_object *a = open_obj(c, "/brief", CB, "v");
	struct cache_object *b = open_obj(c, "/stays", CB, "v");
	char map[PATH_MAX], data[PATH_MAX];

	get_and_release(a, "/brief", "v", 0);
	get_and_release(b, "/stays", "v", 0); /* evicts /brief's only chunk */
	map_path_of(a, map, sizeof(map));
	snprintf(data, sizeof(data), "%s", cache_object_data_path(a));
	cr_assert_eq(cache_sync(c), 0);
	cr_assert_neq(access(map, F_OK), 0, "a map was made for nothing");
	cache_object_unref(a);
	cache_object_unref(b);
	cache_free(c);
	c = open_cache(NULL, CB);
	cr_assert_neq(access(data, F_OK), 0, "%s is still there", data);
	cr_assert_eq(stats(c).nr_objects, 1);
	cache_free(c);
}

struct vandal {
	const char *paths[2];
	uint64_t sizes[2];
	atomic_bool stop;
	atomic_int nr_flips;
};

/* Flips a byte of a data file now and then, as a failing disk or a local user would. */
static void *vandal_thread(void *p)
{
	struct vandal *v = p;
	uint64_t seed = 99;

	while (!atomic_load(&v->stop)) {
		int k, fd;
		uint64_t off;
		unsigned char x;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		k = (int)(seed % 2);
		off = (seed >> 8) % v->sizes[k];
		fd = open(v->paths[k], O_RDWR);
		if (fd >= 0 && pread(fd, &x, 1, (off_t)off) == 1 && x) {
			x ^= 1;
			if (pwrite(fd, &x, 1, (off_t)off) == 1)
				atomic_fetch_add(&v->nr_flips, 1);
		}
		if (fd >= 0)
			close(fd);
		usleep(2000);
	}
	return NULL;
}

struct damaged_reader {
	struct cache_object *objs[3];
	const char *paths[3];
	uint64_t seed;
	atomic_int *wrong, *refused;
};

static void *damaged_reader_thread(void *p)
{
	struct damaged_reader *r = p;
	unsigned char *buf = malloc(4 * CB), *got = malloc(4 * CB);

	cr_assert(buf && got);
	for (int it = 0; it < 1500; it++) {
		uint64_t nr, idx, off, len, a, l;
		ssize_t n;
		int k, rc;

		r->seed ^= r->seed << 13;
		r->seed ^= r->seed >> 7;
		r->seed ^= r->seed << 17;
		k = (int)(r->seed % 3);
		nr = cache_object_nr_chunks(r->objs[k]);
		idx = (r->seed >> 8) % nr;
		off = idx * 4 * CB;
		len = len_of(r->objs[k], idx);
		rc = cache_chunk_acquire(r->objs[k], idx, true);
		if (rc == CACHE_FETCH) {
			src_fill(r->paths[k], "v", off, buf, len);
			if (cache_chunk_fill(r->objs[k], idx, buf, len) != 0)
				continue;
		} else if (rc != CACHE_HIT) {
			continue;
		}
		a = (r->seed >> 20) % len;
		l = (r->seed >> 40) % (len - a) + 1;
		n = cache_object_read(r->objs[k], got, l, off + a);
		if (n == -EBADMSG) {
			atomic_fetch_add(r->refused, 1);
		} else if (n != (ssize_t)l) {
			atomic_fetch_add(r->wrong, 1);
		} else {
			for (uint64_t i = 0; i < l; i++) {
				if (got[i] != src_byte(r->paths[k], "v", off + a + i)) {
					atomic_fetch_add(r->wrong, 1);
					break;
				}
			}
		}
		cache_chunk_release(r->objs[k], idx);
	}
	free(buf);
	free(got);
	return NULL;
}

Test(cache, readers_never_see_bytes_flipped_under_them_while_chunks_are_evicted_and_synced)
{
	enum { NR = 4 };
	struct cache *c = open_cache_at(tmp_dir, NULL, 8 * 4 * CB, 4 * CB);
	struct damaged_reader r[NR];
	struct vandal v = { 0 };
	struct sync_loop s;
	pthread_t tr[NR], tv, ts;
	atomic_int wrong = 0, refused = 0;
	struct cache_object *objs[3];
	const char *paths[3] = { "/d0", "/d1", "/d2" };

	objs[0] = open_obj(c, paths[0], 20 * 4 * CB, "v");
	objs[1] = open_obj(c, paths[1], 7 * 4 * CB + 1000, "v");
	objs[2] = open_obj(c, paths[2], 3000, "v");
	for (int k = 0; k < 2; k++) {
		v.paths[k] = cache_object_data_path(objs[k]);
		v.sizes[k] = cache_object_size(objs[k]);
	}
	s = (struct sync_loop){ .c = c };
	cr_assert_eq(pthread_create(&ts, NULL, sync_loop_thread, &s), 0);
	cr_assert_eq(pthread_create(&tv, NULL, vandal_thread, &v), 0);
	for (int t = 0; t < NR; t++) {
		r[t] = (struct damaged_reader){ .seed = 0x1234567ull * (t + 1),
			.wrong = &wrong,
			.refused = &refused };
		memcpy(r[t].objs, objs, sizeof(objs));
		memcpy(r[t].paths, paths, sizeof(paths));
		cr_assert_eq(pthread_create(&tr[t], NULL, damaged_reader_thread, &r[t]), 0);
	}
	for (int t = 0; t < NR; t++)
		pthread_join(tr[t], NULL);
	atomic_store(&v.stop, true);
	atomic_store(&s.stop, true);
	pthread_join(tv, NULL);
	pthread_join(ts, NULL);
	cr_log_info("flips %d, reads refused %d, verify failures %lu", atomic_load(&v.nr_flips),
		atomic_load(&refused), (unsigned long)stats(c).verify_failures);
	cr_assert_eq(atomic_load(&wrong), 0, "%d reads returned wrong bytes", atomic_load(&wrong));
	cr_assert_gt(stats(c).verify_failures, 0, "no flip was ever read: the test saw nothing");
	for (int k = 0; k < 3; k++)
		cache_object_unref(objs[k]);
	cache_free(c);
}

struct version_opener {
	struct cache *c;
	const char *version;
	int failures;
};

static void *open_versions(void *arg)
{
	struct version_opener *v = arg;

	for (int i = 0; i < 20000; i++) {
		struct cache_object *o;

		if (obj_open(v->c, "p", 100000, v->version, &o) == 0)
			cache_object_unref(o);
		else
			v->failures++;
	}
	return NULL;
}

/* Each open of another version makes the last one stale, and the last unref of a stale
 * object frees it: the unref of one thread raced another's free (a use-after-free that the
 * sanitizer tree of the suite reports; found in review). */
Test(cache, openers_of_three_versions_of_one_path_never_touch_a_freed_object, .timeout = 120)
{
	struct cache *c = open_cache(NULL, 0);
	struct version_opener v[3] = { { .c = c, .version = "v1" }, { .c = c, .version = "v2" },
		{ .c = c, .version = "v3" } };
	pthread_t t[3];

	for (int i = 0; i < 3; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, open_versions, &v[i]), 0);
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(v[i].failures, 0, "%s", v[i].version);
	}
	cache_free(c);
}
