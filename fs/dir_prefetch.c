/* Readahead across the files of a directory; see dir_prefetch.h.
 * Detection runs in the FUSE thread that answers the open, under dp->lock, and only queues
 * inos. Workers do the rest, since learning an object's version may take a request (a HEAD
 * when the listing had no ETag), then hand its first chunk to the fetch engine, which fetches
 * it with the other transfers and stores it as any readahead. A file the engine turns away
 * (its readahead memory is full: the disk or the network lags) is not dropped: its walk queues
 * it again at its next open. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fs/cache.h"
#include "fs/dir_prefetch.h"
#include "fs/fetch.h"
#include "fs/namespace.h"

#define NR_STREAMS       8           /* directories walked at once */
#define SEQUENTIAL_FILES 2           /* in-order opens before the next files are fetched */
#define MAX_GAP          4           /* entries an in-order walk may skip (dirs, other names) */
#define AHEAD_BYTES      (32u << 20) /* at most this much fetched ahead of a walk */
#define QUEUE_LEN        512
#define NR_WORKERS       4

/* One directory being walked. */
struct stream {
	uint64_t dir;    /* 0: unused */
	size_t next;     /* index after the file opened last */
	size_t ahead_to; /* the files before this index are queued, fetched ahead or opened */
	unsigned run;    /* opens in a row, each at most MAX_GAP entries after the previous */
	uint64_t last_use;
};

/* A file to fetch ahead, and where it is: its walk is told when the engine turns it away. */
struct ahead {
	uint64_t ino;
	uint64_t dir;
	size_t index;
};

struct dir_prefetch {
	struct namespace *ns;
	struct fetcher *fetcher;
	uint32_t chunk_bytes;
	unsigned ahead_files;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;                         /* lock */
	struct stream streams[NR_STREAMS]; /* lock */
	uint64_t clock;                    /* lock */
	struct ahead queue[QUEUE_LEN];     /* lock: files to fetch, a ring */
	unsigned head, len;                /* lock */
	struct ns_file *files;             /* lock: scratch of ahead_files entries */
	pthread_t workers[NR_WORKERS];
	unsigned nr_workers;
	atomic_uint_fast64_t nr_files;
};

/* The engine did not go through file a: readahead holds its bound of memory. Its walk forgets
 * that it was queued, so that the walk's next open queues it again (and what follows it), as a
 * sequential reader asks again for the chunks it skipped; nothing else would ever fetch it
 * ahead. A file the walk has opened since, or a walk started over, needs nothing. */
static void turned_away(struct dir_prefetch *dp, const struct ahead *a)
{
	pthread_mutex_lock(&dp->lock);
	for (int i = 0; i < NR_STREAMS; i++) {
		struct stream *s = &dp->streams[i];

		if (s->dir == a->dir && a->index >= s->next && a->index < s->ahead_to)
			s->ahead_to = a->index;
	}
	pthread_mutex_unlock(&dp->lock);
}

static void fetch_one(struct dir_prefetch *dp, const struct ahead *a)
{
	struct ns_node *n = namespace_get(dp->ns, a->ino);
	struct cache_object *co;
	uint64_t next = 1;

	if (!n)
		return;
	if (fetcher_open_node(dp->fetcher, dp->ns, n, &co) == 0) {
		/* The first chunk: all of a small file; for a large one, the part its own
		 * readahead would wait for first. */
		if (cache_object_size(co) &&
			fetcher_prefetch_sequential(dp->fetcher, co, 0, 1, &next))
			atomic_fetch_add(&dp->nr_files, 1);
		cache_object_unref(co);
	}
	namespace_put(dp->ns, n);
	if (!next)
		turned_away(dp, a);
}

static void *worker_main(void *arg)
{
	struct dir_prefetch *dp = arg;

	pthread_mutex_lock(&dp->lock);
	for (;;) {
		struct ahead a;

		while (!dp->len && !dp->stop)
			pthread_cond_wait(&dp->cond, &dp->lock);
		if (dp->stop)
			break;
		a = dp->queue[dp->head];
		dp->head = (dp->head + 1) % QUEUE_LEN;
		dp->len--;
		pthread_mutex_unlock(&dp->lock);
		fetch_one(dp, &a);
		pthread_mutex_lock(&dp->lock);
	}
	pthread_mutex_unlock(&dp->lock);
	return NULL;
}

int dir_prefetch_new(struct dir_prefetch **out, struct namespace *ns, struct fetcher *f,
	uint32_t chunk_bytes, unsigned ahead_files)
{
	struct dir_prefetch *dp;
	int ret;

	*out = NULL;
	if (!ahead_files)
		return 0;
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return -ENOMEM;
	dp->files = calloc(ahead_files, sizeof(*dp->files));
	if (!dp->files) {
		free(dp);
		return -ENOMEM;
	}
	dp->ns = ns;
	dp->fetcher = f;
	dp->chunk_bytes = chunk_bytes;
	dp->ahead_files = ahead_files;
	pthread_mutex_init(&dp->lock, NULL);
	pthread_cond_init(&dp->cond, NULL);
	for (; dp->nr_workers < NR_WORKERS; dp->nr_workers++) {
		ret = pthread_create(&dp->workers[dp->nr_workers], NULL, worker_main, dp);
		if (ret) {
			dir_prefetch_free(dp);
			return -ret;
		}
	}
	*out = dp;
	return 0;
}

void dir_prefetch_free(struct dir_prefetch *dp)
{
	if (!dp)
		return;
	pthread_mutex_lock(&dp->lock);
	dp->stop = true;
	pthread_cond_broadcast(&dp->cond);
	pthread_mutex_unlock(&dp->lock);
	for (unsigned i = 0; i < dp->nr_workers; i++)
		pthread_join(dp->workers[i], NULL);
	pthread_cond_destroy(&dp->cond);
	pthread_mutex_destroy(&dp->lock);
	free(dp->files);
	free(dp);
}

/* The stream of directory dir, or the least recently used one, emptied for it. */
static struct stream *stream_for(struct dir_prefetch *dp, uint64_t dir, bool *fresh)
{
	struct stream *victim = &dp->streams[0];

	for (int i = 0; i < NR_STREAMS; i++) {
		struct stream *s = &dp->streams[i];

		if (s->dir == dir) {
			*fresh = false;
			return s;
		}
		if (s->last_use < victim->last_use)
			victim = s;
	}
	*victim = (struct stream){ .dir = dir };
	*fresh = true;
	return victim;
}

void dir_prefetch_opened(struct dir_prefetch *dp, struct ns_node *n, bool cached)
{
	struct stream *s;
	struct ahead *a;
	uint64_t dir, bytes = 0;
	size_t idx, until, nr, queued = 0;
	bool fresh;

	if (!dp || namespace_position(dp->ns, n, &dir, &idx))
		return;
	pthread_mutex_lock(&dp->lock);
	s = stream_for(dp, dir, &fresh);
	s->last_use = ++dp->clock;
	if (fresh) {
		s->next = idx + 1;
		goto out;
	}
	if (idx < s->next && s->next - idx <= MAX_GAP)
		goto out; /* the same file again, or one that lost a race to the lock */
	if (idx >= s->next && idx - s->next < MAX_GAP) {
		s->run++; /* the next file, or one a few entries on (a glob, subdirectories) */
	} else {
		s->run = 0;
		s->ahead_to = 0;
	}
	s->next = idx + 1;
	/* A warm walk needs nothing; one that met a cold file keeps going ahead. */
	if (s->run < SEQUENTIAL_FILES || (cached && s->ahead_to <= idx))
		goto out;
	/* The window: the files after this one that fit AHEAD_BYTES at up to a chunk each (at
	 * least one), among the next ahead_files entries; queued unless they were already. */
	nr = namespace_files_from(dp->ns, dir, idx + 1, dp->ahead_files, dp->files);
	until = idx + 1;
	for (size_t i = 0; i < nr; i++) {
		uint64_t b =
			dp->files[i].size < dp->chunk_bytes ? dp->files[i].size : dp->chunk_bytes;

		if (i && bytes + b > AHEAD_BYTES)
			break;
		bytes += b;
		until = dp->files[i].index + 1;
	}
	for (size_t i = 0; i < nr && dp->files[i].index < until; i++) {
		if (dp->files[i].index < s->ahead_to)
			continue;
		if (dp->len == QUEUE_LEN) { /* the workers lag: the rest another time */
			until = dp->files[i].index;
			break;
		}
		a = &dp->queue[(dp->head + dp->len) % QUEUE_LEN];
		a->ino = dp->files[i].ino;
		a->dir = dir;
		a->index = dp->files[i].index;
		dp->len++;
		queued++;
	}
	if (until > s->ahead_to)
		s->ahead_to = until;
	if (queued)
		pthread_cond_broadcast(&dp->cond);
out:
	pthread_mutex_unlock(&dp->lock);
}

uint64_t dir_prefetch_nr_files(const struct dir_prefetch *dp)
{
	return dp ? atomic_load(&((struct dir_prefetch *)dp)->nr_files) : 0;
}
