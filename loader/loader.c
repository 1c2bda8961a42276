/* The loader: a reader thread turns the sampler's order into reads (ferry fast path, io_uring
 * or pread) that fill a fixed ring of staging buffers ahead of use; loader_next_batch hands
 * out the next filled batch (and starts its copy to the GPU). See loader/loader.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"
#include "loader/loader_i.h"

enum read_path { PATH_DIRECT, PATH_CUFILE, PATH_URING, PATH_PREAD };

static const char *const path_names[] = {
	[PATH_DIRECT] = "ferry-direct",
	[PATH_CUFILE] = "cufile",
	[PATH_URING] = "io_uring",
	[PATH_PREAD] = "pread",
};

#define DIRECT_ALIGN     4096u
#define DIRECT_HOLD_MS   30000u
/* A remembered resident range is trusted for reads that start at least this long before its
 * hold expires: a read of a batch takes milliseconds, so this is a wide margin. */
#define DIRECT_MARGIN_MS 5000.0
/* O_DIRECT descriptors of cache files a reader keeps (two fds each), at most: fewer when
 * RLIMIT_NOFILE is low (see direct_nr_fds). */
#define DIRECT_NR_FDS    16
#define DIRECT_NR_HELD   64
/* After this many failed fast-path reads the loader stops trying it. */
#define DIRECT_MAX_FAILS 8
#define MAX_READERS      16
/* Windows kept: the one being used and the next one, read ahead. A third, so that a reader
 * lagging on the previous window never delays the read-ahead, measured 5% slower (shuffled,
 * bench_loader.sh): 16 MiB more for the CPU's caches to lose. */
#define NR_WINDOWS       2
/* The fast path reads only bytes it has checked against the daemon's block checksums, so it
 * reads whole blocks: the block-aligned cover of each read. Reads at least this long go
 * through it (window pieces in place, with block-sized room around each; file-order batches
 * through the bounce buffer); shorter ones (tiny shards, small batches) read through the
 * mount, where a whole block for a few KiB would cost more than it saves. */
#define DIRECT_BLOCK     FERRY_RESIDENT_BLOCK_BYTES
#define DIRECT_MIN_BYTES (64u << 10)

/* A staging slot. Written by the reader that claimed it while the ring says it is being
 * filled, read by the consumer once taken; the ring (under loader->lock) orders the two. */
struct loader_slot {
	struct loader_state state;
	uint32_t row_stride;
	int err;
	char errmsg[256];
	int32_t *wide;          /* 2 * B * T int32: inputs then targets, or one run of B*T+1 */
	const int32_t *inputs, *targets;
};

/* An O_DIRECT descriptor of a ferry cache file, reused while the daemon answers the same
 * path (by hash) for the shard. One reader's own. */
struct direct_fd {
	uint32_t shard;
	uint64_t path_hash;
	int fd;
	int buffered_fd;        /* the same file without O_DIRECT, for what the page cache holds */
	void *cufile;           /* cuFile handle of fd on the cufile path, else NULL */
};

/* A block-aligned range of a shard the daemon made resident and holds until expires_ms
 * (CLOCK_MONOTONIC, taken before the ioctl, so never later than the daemon's own expiry),
 * with the checksum of each of its blocks as the daemon answered them: sums[k] is the block
 * at start + k * DIRECT_BLOCK (end is clipped to the file, and to the blocks with a sum).
 * Reads inside it need no ioctl. Under loader->held_lock; an entry with end == 0 is free. */
struct held_range {
	uint32_t shard;
	uint64_t start, end;
	double expires_ms;
	uint64_t path_hash;
	uint64_t *sums;         /* FERRY_RESIDENT_MAX_SUMS of loader->held_sums, set at open */
	char path[sizeof(((struct ferry_resident *)0)->cache_path)];
};

/* One piece of a window: the window's slots [slot, slot + nr) are samples that lie end to end
 * in one shard, read with one read into the window's buffer at data. */
struct window_piece {
	uint64_t slot, nr;
	uint64_t data;          /* offset of the first token in the window's buffer */
};

enum window_state { WINDOW_FREE, WINDOW_LOADING, WINDOW_READY };

/* A rank's window of the shuffled order (see struct sampler), read whole. Under loader->lock:
 * state, epoch, index, users, last_use; buf and pieces are written only by the reader that set
 * state LOADING, and read only while READY and users > 0 (a READY window with no users may be
 * reused for another). */
struct window {
	enum window_state state;
	uint64_t epoch, index;
	uint32_t users;
	uint64_t last_use;
	char *buf;
	struct window_piece *pieces;
	uint32_t nr_pieces;
};

/* A fast-path read waiting to be checked and copied out of the bounce buffer (or read in
 * place when dst equals src). The op reads the blocks [block_off, block_end) of the cache file
 * into op->dst, whose checksums are nr_sums entries of the reader's sums from sum_first; a
 * block that does not match is read again, through the mount (plain_fd at plain_off). */
struct direct_copy {
	uint32_t op;            /* index in ops */
	void *dst;
	const void *src;
	uint32_t len;
	int plain_fd;           /* the shard itself, for the fallback */
	uint64_t plain_off;
	uint64_t block_off, block_end;
	uint32_t sum_first, nr_sums;
};

/* One reader thread and what it alone touches: it claims a slot, reads its batch and widens
 * it, while the other readers fill the next slots. */
struct reader {
	struct loader *l;
	pthread_t thread;
	bool started;
	struct read_uring *uring;
	struct read_op *ops;
	struct direct_copy *copies;
	uint32_t *op_shard;     /* the shard of each op */
	bool *on_ferry;         /* each op's shard is on a ferry mount */
	uint32_t *pinned;       /* shards whose users count this batch holds */
	uint32_t nr_pinned;
	uint32_t max_ops;       /* length of ops, copies, op_shard, on_ferry, pinned */
	struct sampler_run *runs;
	const char **rows;      /* B: where each row of a shuffled batch lies in its window */
	void *bounce;
	uint64_t *sums;         /* the block checksums of a batch's fast-path reads */
	uint32_t max_sums, nr_sums;
	const void *run_src;    /* set by read_ops: where the checked bytes of a lone op lie in
				 * the bounce buffer, when they were left there (see read_ops) */
	struct gds_reader *gds; /* cufile path: registered device bounce buffer, else NULL */
	struct direct_fd dfds[DIRECT_NR_FDS]; /* the first l->nr_dfds are used */
	uint32_t *group;        /* max_pins: the distinct shards of the ops read at once */
	uint32_t max_pins;      /* shards this reader pins at once: its share of ds.max_open */
};

/* Fields under "lock" are shared with the consumer; ds_lock guards the dataset's fds and
 * lazily-read headers; held_lock the remembered resident ranges; the rest are set in
 * loader_open and then read-only, or atomics. */
struct loader {
	struct loader_config cfg;
	char *paths;
	struct sampler sampler; /* read-only */
	struct stage *stage;
	size_t raw_bytes;
	size_t bounce_bytes;
	uint32_t block_bytes, window_blocks;
	struct window windows[NR_WINDOWS]; /* lock (see struct window) */
	uint64_t window_clock;             /* lock */
	size_t window_bytes;               /* capacity of each window's buffer */
	uint32_t max_pieces;
	struct loader_slot *slots;
	uint32_t nr_slots;
	struct reader *readers;
	uint32_t nr_readers;
	uint32_t nr_dfds;       /* direct_fd slots per reader, 1..DIRECT_NR_FDS */
	bool force_pread;

	pthread_mutex_t ds_lock;
	struct dataset ds;      /* ds_lock (after open) */

	pthread_mutex_t held_lock;
	struct held_range held[DIRECT_NR_HELD]; /* held_lock */
	uint64_t *held_sums;                    /* held_lock: the held ranges' sums */
	uint32_t chunk_bytes;                   /* held_lock: the cache's chunk, 0 until known */
	_Atomic uint64_t nr_ioctls;             /* FERRY_IOC_RESIDENT calls, for the log */
	_Atomic uint64_t nr_direct_reads;       /* O_DIRECT reads of cache files */
	_Atomic uint64_t nr_verified_blocks;    /* fast-path blocks that matched their sums */
	_Atomic uint64_t nr_fallbacks;          /* fast-path reads redone through the mount: a
						 * block that did not match, or had no sum */
	_Atomic bool said_mismatch, said_missing;  /* the first of each was said */

	_Atomic bool nowait_ok;  /* preadv2(RWF_NOWAIT) works on these files */
	_Atomic uint32_t direct_fails;
	_Atomic bool direct_allowed;
	struct gds *gds;        /* libcufile, when the cufile path was set up */
	_Atomic bool cufile_ok; /* the cufile path is in use (cleared for good on a failure) */
	_Atomic int path;       /* enum read_path now in use */

	pthread_mutex_t lock;
	pthread_cond_t fill_cond;  /* readers wait here: a slot to fill, stop */
	pthread_cond_t window_cond;/* readers wait here: a window read, or given back */
	pthread_cond_t ready_cond; /* the consumer waits here: a slot filled, a reader done */
	struct ring ring;               /* lock */
	struct loader_state fill_state; /* lock: the batch the readers claim next */
	struct loader_state next_state; /* lock: the batch loader_next_batch returns next */
	uint32_t nr_busy;               /* lock: readers filling a slot outside the lock */
	bool reader_paused;             /* lock: stopped after a failed batch until a seek */
	bool stop;                      /* lock */
	int sticky_err;                 /* lock: the consumer met this error; until a seek */
	char last_error[256];           /* consumer thread */
};

static void say(const struct loader *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Library code: warnings go to stderr, never stdout. */
static void say(const struct loader *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("ferry loader: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool probe_ferry(const char *path)
{
	return getxattr(path, FERRY_XATTR_SOURCE, NULL, 0) >= 0;
}

/* ---- the ferry fast path ---- */

static uint64_t hash_path(const char *p)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return h;
}

static void direct_close_all(struct reader *r)
{
	for (uint32_t i = 0; i < r->l->nr_dfds; i++) {
		gds_handle_deregister(r->l->gds, r->dfds[i].cufile);
		r->dfds[i].cufile = NULL;
		if (r->dfds[i].fd >= 0)
			close(r->dfds[i].fd);
		if (r->dfds[i].buffered_fd >= 0)
			close(r->dfds[i].buffered_fd);
		r->dfds[i].fd = r->dfds[i].buffered_fd = -1;
	}
}

/* The reader's O_DIRECT fd of shard's cache file, opened when the daemon names another one. */
static int direct_fd_for(struct reader *r, uint32_t shard, uint64_t hash, const char *path)
{
	struct direct_fd *d = &r->dfds[shard % r->l->nr_dfds];

	if (d->fd >= 0 && d->shard == shard && d->path_hash == hash)
		return d->fd;
	gds_handle_deregister(r->l->gds, d->cufile);
	d->cufile = NULL;
	if (d->fd >= 0)
		close(d->fd);
	if (d->buffered_fd >= 0)
		close(d->buffered_fd);
	d->buffered_fd = open(path, O_RDONLY | O_CLOEXEC);
	d->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (d->fd < 0)
		return -errno;
	d->shard = shard;
	d->path_hash = hash;
	return d->fd;
}

static void direct_failed(struct loader *l, const char *what, int err)
{
	uint32_t n = atomic_fetch_add(&l->direct_fails, 1) + 1;
	bool allowed = true;

	if (n == 1)
		say(l, "ferry fast path: %s: %s; reading through the mount instead", what,
			strerror(-err));
	if (n >= DIRECT_MAX_FAILS && atomic_compare_exchange_strong(&l->direct_allowed, &allowed,
		    false)) {
		atomic_store(&l->path, l->readers[0].uring ? PATH_URING : PATH_PREAD);
		say(l, "ferry fast path failed %u times; using %s from now on", n,
			path_names[atomic_load(&l->path)]);
	}
}

/* The fast path is off for good: the daemon gives no block checksums to check its cache file
 * against (a daemon older than them), so nothing read from there could be trusted. */
static void direct_off_unverifiable(struct loader *l)
{
	bool allowed = true;

	if (!atomic_compare_exchange_strong(&l->direct_allowed, &allowed, false))
		return;
	atomic_store(&l->path, l->readers[0].uring ? PATH_URING : PATH_PREAD);
	say(l, "ferry fast path: the daemon gives no block checksums to check its cache file "
		"against; reading through the mount (%s)", path_names[atomic_load(&l->path)]);
}

/* Forgets what is remembered of shard s (its cache file failed a read). */
static void held_forget(struct loader *l, uint32_t s)
{
	pthread_mutex_lock(&l->held_lock);
	for (int i = 0; i < DIRECT_NR_HELD; i++)
		if (l->held[i].end && l->held[i].shard == s)
			l->held[i].end = 0;
	pthread_mutex_unlock(&l->held_lock);
}

/* Copies the sums of blocks [c_off, c_end) out of h (which covers them) into sums. */
static void held_copy_sums(const struct held_range *h, uint64_t c_off, uint64_t c_end,
	uint64_t *sums)
{
	uint64_t first = (c_off - h->start) / DIRECT_BLOCK;
	uint64_t n = (c_end - c_off + DIRECT_BLOCK - 1) / DIRECT_BLOCK;

	memcpy(sums, h->sums + first, n * sizeof(*sums));
}

/* The O_DIRECT fd of the cache file holding the blocks [c_off, c_end) of shard s (c_off a
 * multiple of DIRECT_BLOCK, c_end a multiple of it or the end of the file), with that range
 * resident and held, and the checksums of those blocks copied into sums: from a remembered
 * range when one covers it long enough, else from one FERRY_IOC_RESIDENT for the chunk-aligned
 * range around it, which is then remembered. -ERANGE when the daemon held the range but gave
 * no sum for some of its blocks (the caller reads it through the mount); other -errno when
 * the fast path failed. */
static int direct_resident_fd(struct reader *r, uint32_t s, int plain_fd, uint64_t c_off,
	uint64_t c_end, uint64_t *sums)
{
	struct loader *l = r->l;
	struct ferry_resident *res;
	struct held_range *h, *victim = NULL;
	uint64_t hash, chunk, start, end, held_end;
	double t = now_ms();
	int fd;

	pthread_mutex_lock(&l->held_lock);
	for (int i = 0; i < DIRECT_NR_HELD; i++) {
		h = &l->held[i];
		if (h->end && h->shard == s && h->start <= c_off && c_end <= h->end &&
			h->expires_ms - DIRECT_MARGIN_MS > t) {
			/* The path is copied out only when this reader has no fd for it yet. */
			struct direct_fd *d = &r->dfds[s % l->nr_dfds];
			char path[sizeof(h->path)];

			held_copy_sums(h, c_off, c_end, sums);
			if (d->fd >= 0 && d->shard == s && d->path_hash == h->path_hash) {
				pthread_mutex_unlock(&l->held_lock);
				return d->fd;
			}
			memcpy(path, h->path, sizeof(path));
			hash = h->path_hash;
			pthread_mutex_unlock(&l->held_lock);
			return direct_fd_for(r, s, hash, path);
		}
	}
	chunk = l->chunk_bytes;
	pthread_mutex_unlock(&l->held_lock);

	/* On the heap: 12 KiB with its sums; the allocation is nothing next to the ioctl. */
	res = calloc(1, sizeof(*res));
	if (!res)
		return -ENOMEM;
	start = chunk ? c_off / chunk * chunk : c_off;
	end = chunk ? (c_end + chunk - 1) / chunk * chunk : c_end;
	/* The daemon answers the sums of at most FERRY_RESIDENT_MAX_SUMS blocks from the start:
	 * where the chunks around the range hold more, they start at the range itself. */
	if ((end - start) / DIRECT_BLOCK > FERRY_RESIDENT_MAX_SUMS)
		start = c_off;
	res->offset = start;
	res->length = end - start;
	res->hold_ms = DIRECT_HOLD_MS;
	atomic_fetch_add(&l->nr_ioctls, 1);
	if (ioctl(plain_fd, FERRY_IOC_RESIDENT, res) < 0) {
		fd = -errno;
		direct_failed(l, "FERRY_IOC_RESIDENT", fd);
		goto out;
	}
	if (res->block_bytes != DIRECT_BLOCK) {
		direct_off_unverifiable(l);
		fd = -EOPNOTSUPP;
		goto out;
	}
	res->cache_path[sizeof(res->cache_path) - 1] = '\0';
	hash = hash_path(res->cache_path);
	fd = direct_fd_for(r, s, hash, res->cache_path);
	if (fd < 0) {
		direct_failed(l, "opening the cache file with O_DIRECT", fd);
		goto out;
	}
	/* What the daemon holds: the chunks around the range asked, clipped to the file, and of
	 * that, what it gave sums for. */
	chunk = res->chunk_bytes;
	if (chunk) {
		start = start / chunk * chunk;
		end = (end + chunk - 1) / chunk * chunk;
	}
	if (end > res->file_size)
		end = res->file_size;
	start = res->sums_offset;
	held_end = start + (uint64_t)res->nr_sums * DIRECT_BLOCK;
	if (res->nr_sums > FERRY_RESIDENT_MAX_SUMS || start % DIRECT_BLOCK)
		held_end = start; /* a daemon that says nonsense gets no trust */
	if (end > held_end)
		end = held_end;
	pthread_mutex_lock(&l->held_lock);
	if (chunk && !l->chunk_bytes)
		l->chunk_bytes = (uint32_t)chunk;
	for (int i = 0; i < DIRECT_NR_HELD; i++) {
		h = &l->held[i];
		if (!victim || !h->end || h->expires_ms < victim->expires_ms)
			victim = h;
		if (!h->end)
			break;
	}
	if (end > start) {
		victim->shard = s;
		victim->start = start;
		victim->end = end;
		victim->expires_ms = t + DIRECT_HOLD_MS;
		victim->path_hash = hash;
		memcpy(victim->sums, res->sums,
			(end - start + DIRECT_BLOCK - 1) / DIRECT_BLOCK * sizeof(*res->sums));
		memcpy(victim->path, res->cache_path, sizeof(victim->path));
	}
	if (start <= c_off && c_end <= end && end > start) {
		held_copy_sums(victim, c_off, c_end, sums);
	} else {
		fd = -ERANGE;
	}
	pthread_mutex_unlock(&l->held_lock);
out:
	free(res);
	return fd;
}

/* The blocks [*c_off, *c_end) that cover [off, off + len) of a file of file_bytes. */
static void block_cover(uint64_t off, uint64_t len, uint64_t file_bytes, uint64_t *c_off,
	uint64_t *c_end)
{
	*c_off = off / DIRECT_BLOCK * DIRECT_BLOCK;
	*c_end = (off + len + DIRECT_BLOCK - 1) / DIRECT_BLOCK * DIRECT_BLOCK;
	if (*c_end > file_bytes)
		*c_end = file_bytes;
}

/* A fast-path read that will be redone through the mount: a block that did not match its
 * sum (the cache file was damaged, or the chunk dropped after its hold), or one the daemon
 * gave no sum for. Counted; the first of each kind is said once. */
static void direct_fallback(struct loader *l, uint32_t s, uint64_t off, uint64_t end,
	bool mismatch)
{
	_Atomic bool *said = mismatch ? &l->said_mismatch : &l->said_missing;
	bool no = false;

	atomic_fetch_add(&l->nr_fallbacks, 1);
	if (atomic_compare_exchange_strong(said, &no, true))
		say(l, "%s: bytes %llu-%llu of the cache file: %s; reading them through the mount "
			"(further ones are counted, not said)", l->ds.shards[s].path,
			(unsigned long long)off, (unsigned long long)end,
			mismatch ? "a block does not match its checksum" :
				   "the daemon gave no checksum for a block");
}

/* Turns op (a plain read of shard s) into an O_DIRECT read of the blocks covering it in the
 * daemon's cache file, into the bounce buffer at *bounce_pos; the caller checks them against
 * their sums after the read. Samples are not block aligned, so O_DIRECT cannot land them in
 * place; the copy out of the bounce buffer costs far less than the fetch. With bounce_pos
 * NULL the read lands in place instead: the caller laid op->dst out so that the 4 KiB-aligned
 * cover of its blocks is its own (a window piece). 0, or -errno and op unchanged (the caller
 * reads plainly). */
static int direct_prepare(struct reader *r, uint32_t s, struct read_op *op, uint32_t idx,
	size_t *bounce_pos, uint32_t *nr_copies)
{
	uint64_t c_off, c_end, a_end, nr;
	void *dst;
	int fd;

	block_cover(op->off, op->len, r->l->ds.shards[s].file_bytes, &c_off, &c_end);
	nr = (c_end - c_off + DIRECT_BLOCK - 1) / DIRECT_BLOCK;
	a_end = (c_end + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
	if (c_end < op->off + op->len || r->nr_sums + nr > r->max_sums ||
		(bounce_pos && *bounce_pos + (a_end - c_off) > r->l->bounce_bytes))
		return -ENOSPC; /* cannot happen: max_sums and bounce_bytes cover every batch */
	fd = direct_resident_fd(r, s, op->fd, c_off, c_end, r->sums + r->nr_sums);
	if (fd == -ERANGE)
		direct_fallback(r->l, s, c_off, c_end, false);
	if (fd < 0)
		return fd;
	dst = bounce_pos ? (char *)r->bounce + *bounce_pos : (char *)op->dst - (op->off - c_off);
	r->copies[*nr_copies] = (struct direct_copy){
		.op = idx,
		.dst = op->dst,
		.src = (char *)dst + (op->off - c_off),
		.len = op->len,
		.plain_fd = op->fd,
		.plain_off = op->off,
		.block_off = c_off,
		.block_end = c_end,
		.sum_first = r->nr_sums,
		.nr_sums = (uint32_t)nr,
	};
	(*nr_copies)++;
	r->nr_sums += (uint32_t)nr;
	atomic_fetch_add(&r->l->nr_direct_reads, 1);
	op->fd = fd;
	op->dst = dst;
	op->need = (uint32_t)(c_end - c_off);
	op->len = (uint32_t)(a_end - c_off);
	op->off = c_off;
	if (bounce_pos)
		*bounce_pos += a_end - c_off;
	return 0;
}

/* Whether the blocks a fast-path read brought (op->dst, from block_off) match their sums. */
static bool direct_verify(const struct reader *r, const struct direct_copy *cp,
	const struct read_op *op)
{
	const char *buf = op->dst;
	const uint64_t *sums = r->sums + cp->sum_first;

	for (uint64_t b = cp->block_off, k = 0; b < cp->block_end; b += DIRECT_BLOCK, k++) {
		uint64_t n = cp->block_end - b < DIRECT_BLOCK ? cp->block_end - b : DIRECT_BLOCK;

		if (block_hash(buf + (b - cp->block_off), n) != sums[k])
			return false;
	}
	return true;
}

/* ---- the readers ---- */

static int run_ops(struct reader *r, struct read_op *ops, uint32_t n)
{
	int ret;

	if (r->uring && !r->l->force_pread) {
		/* Cached data costs one syscall per op this way; what is missing (a cold mount)
		 * goes to io_uring, all in flight at once. */
		if (atomic_load(&r->l->nowait_ok)) {
			ret = read_nowait_run(ops, n);
			if (ret == -EOPNOTSUPP)
				atomic_store(&r->l->nowait_ok, false);
			else if ((uint32_t)ret == n)
				return 0;
		}
		ret = read_uring_run(r->uring, ops, n);
		if (ret != -ENOSYS && ret != -EBADR)
			return ret;
	}
	return read_pread_run(ops, n);
}

/* Gives back the shards this reader's batch kept open. */
static void unpin_shards(struct reader *r)
{
	struct loader *l = r->l;

	if (!r->nr_pinned)
		return;
	pthread_mutex_lock(&l->ds_lock);
	for (uint32_t i = 0; i < r->nr_pinned; i++)
		dataset_unpin(&l->ds, r->pinned[i]);
	pthread_mutex_unlock(&l->ds_lock);
	r->nr_pinned = 0;
}

/* Opens the shards of ops [first, end), whose fd holds a shard index until here (kept in
 * op_shard), and keeps them open until unpin_shards; each shard is pinned once. Probes each
 * once for the fast path. The caller keeps the distinct shards under max_pins (group_end). */
static int pin_shards(struct reader *r, uint32_t first, uint32_t end, char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct dataset *ds = &l->ds;
	bool direct = atomic_load(&l->direct_allowed);
	int ret = 0;

	pthread_mutex_lock(&l->ds_lock);
	for (uint32_t i = first; i < end; i++) {
		uint32_t s = (uint32_t)r->ops[i].fd;
		struct shard *sh = &ds->shards[s];
		uint32_t k;

		for (k = 0; k < r->nr_pinned && r->pinned[k] != s; k++)
			;
		if (k == r->nr_pinned) {
			ret = dataset_pin(ds, s, err, errlen);
			if (ret < 0)
				break;
			r->pinned[r->nr_pinned++] = s;
		}
		if (direct && !sh->ferry_probed) {
			sh->on_ferry = probe_ferry(sh->path);
			sh->ferry_probed = true;
		}
		r->on_ferry[i] = direct && sh->on_ferry;
		r->ops[i].fd = sh->fd;
		r->ops[i].need = r->ops[i].len;
	}
	pthread_mutex_unlock(&l->ds_lock);
	return ret;
}

/* The end of the group of ops from first that are read at once: as many as touch at most
 * max_pins shards (the reader's share of the dataset's descriptors: ten thousand tiny shards
 * in a window must not need ten thousand), and, on the fast path, no two shards that share a
 * direct_fd slot (opening the cache file of one would close the other's under its read). */
static uint32_t group_end(struct reader *r, uint32_t first, uint32_t nr_ops)
{
	const bool direct = atomic_load(&r->l->direct_allowed);
	const uint32_t nr_dfds = r->l->nr_dfds;
	uint32_t n = 0, i;

	for (i = first; i < nr_ops; i++) {
		uint32_t s = r->op_shard[i], k;
		bool clash = false;

		for (k = 0; k < n && r->group[k] != s; k++)
			if (direct && r->group[k] % nr_dfds == s % nr_dfds)
				clash = true;
		if (k < n)
			continue;
		if (n == r->max_pins || clash)
			break;
		r->group[n++] = s;
	}
	return i;
}

/* Reads r->ops[first, end) (whose fd holds a shard index), all in flight at once, through the
 * ferry fast path where it applies (via the bounce buffer, or in place when in_place: window
 * pieces), and checks that each got its bytes. Their shards stay pinned until unpin_shards.
 * 0 or -errno with err set. */
static int read_group(struct reader *r, uint32_t first, uint32_t end, bool in_place, bool lone,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct dataset *ds = &l->ds;
	const uint32_t nr_ops = end - first;
	uint32_t nr_copies = 0;
	size_t bounce_pos = 0;
	int ret;

	ret = pin_shards(r, first, end, err, errlen);
	if (ret < 0)
		return ret;
	r->nr_sums = 0;
	r->run_src = NULL;
	if (atomic_load(&l->direct_allowed))
		for (uint32_t i = first; i < end; i++)
			if (r->on_ferry[i] && r->ops[i].len >= DIRECT_MIN_BYTES)
				direct_prepare(r, r->op_shard[i], &r->ops[i], i,
					in_place ? NULL : &bounce_pos, &nr_copies);
	/* What the page cache already holds of a cache file (the daemon just wrote it, or it was
	 * read lately) is copied from there: an O_DIRECT read would go to the disk for it, at a
	 * fraction of memory speed (bench_loader.sh: the fast path ran at 0.2 of dd of the mount
	 * on a warm mount with O_DIRECT alone). RWF_NOWAIT never reads the disk, so the page cache
	 * is not filled by the fast path; what is not cached goes by O_DIRECT. */
	for (uint32_t c = 0; c < nr_copies; c++) {
		struct direct_copy *cp = &r->copies[c];
		struct read_op *op = &r->ops[cp->op];
		const struct direct_fd *d = &r->dfds[r->op_shard[cp->op] % l->nr_dfds];
		struct iovec iov = { .iov_base = op->dst, .iov_len = op->need };

		if (d->fd != op->fd || d->buffered_fd < 0)
			continue;
		if (preadv2(d->buffered_fd, &iov, 1, (off_t)op->off, RWF_NOWAIT) ==
			(ssize_t)op->need) {
			op->res = (int)op->need;
			op->done = true;
		}
	}
	run_ops(r, r->ops + first, nr_ops);
	/* Fast-path reads are checked block by block against the daemon's sums; what failed to
	 * read or to match is redone through the mount, which checks and fetches again. Only a
	 * failure of a plain read fails the batch. */
	for (uint32_t c = 0; c < nr_copies; c++) {
		struct direct_copy *cp = &r->copies[c];
		struct read_op *op = &r->ops[cp->op];
		uint32_t s = r->op_shard[cp->op];

		if (op->res >= 0 && (uint32_t)op->res >= op->need) {
			if (direct_verify(r, cp, op)) {
				atomic_fetch_add(&l->nr_verified_blocks, cp->nr_sums);
				/* A lone op on the host (a file-order batch in one run) is widened
				 * straight from the bounce buffer: with the copy into the staging
				 * buffer, which only the GPU upload reads, the checked sequential
				 * fast path ran at 1.1-1.3 Gtokens/s, without it 1.5-2.2 (B=64
				 * T=1024, 512 MB warm, best of 7-9, three runs, 2-core VM). */
				if (lone && !in_place && l->cfg.device < 0)
					r->run_src = cp->src;
				else if (cp->dst != cp->src)
					memcpy(cp->dst, cp->src, cp->len);
				continue;
			}
			direct_fallback(l, s, cp->block_off, cp->block_end, true);
		} else {
			direct_failed(l, "O_DIRECT read of the cache file",
				op->res < 0 ? op->res : -EIO);
		}
		held_forget(l, s);
		*op = (struct read_op){ .fd = cp->plain_fd, .off = cp->plain_off, .len = cp->len,
			.need = cp->len, .dst = cp->dst };
		if (read_pread_run(op, 1) < 0)
			break;
	}
	for (uint32_t i = first; i < end; i++) {
		if (r->ops[i].res < 0 || (uint32_t)r->ops[i].res < r->ops[i].need) {
			ret = r->ops[i].res < 0 ? r->ops[i].res : -EIO;
			snprintf(err, errlen, "%s: reading %llu bytes at %llu: %s",
				ds->shards[r->op_shard[i]].path, (unsigned long long)r->ops[i].len,
				(unsigned long long)r->ops[i].off, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* Reads r->ops[0, nr_ops) (whose fd holds a shard index) a group at a time (see group_end),
 * each group's shards pinned only while it is read. 0 or -errno with err set. */
static int read_ops(struct reader *r, uint32_t nr_ops, bool in_place, char *err, size_t errlen)
{
	uint32_t first, end;
	int ret = 0;

	for (first = 0; first < nr_ops && ret == 0; first = end) {
		end = group_end(r, first, nr_ops);
		ret = read_group(r, first, end, in_place, nr_ops == 1, err, errlen);
		unpin_shards(r);
	}
	return ret;
}

/* Reads window (epoch, index) of this rank into win: its runs of samples, cut where shards
 * end, each piece with one read, all in flight at once. */
static int window_load(struct reader *r, struct window *win, uint64_t epoch, uint64_t index,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct dataset *ds = &l->ds;
	const uint64_t T = l->cfg.seq_len, w = ds->token_bytes;
	uint32_t nr_runs = sampler_window_runs(&l->sampler, epoch, index, r->runs);
	uint32_t n = 0;
	size_t pos = 0;
	int ret;

	for (uint32_t i = 0; i < nr_runs; i++) {
		uint64_t g = r->runs[i].first, left = r->runs[i].nr, slot = r->runs[i].slot;

		while (left) {
			uint32_t s = dataset_find(ds, g);
			const struct shard *sh = &ds->shards[s];
			uint64_t nr = sh->first_sample + sh->nr_samples - g;
			uint64_t off = ds->data_offset + (g - sh->first_sample) * T * w, bytes;

			if (nr > left)
				nr = left;
			bytes = (nr * T + 1) * w;
			if (n >= r->max_ops)
				goto too_big;
			if (bytes >= DIRECT_MIN_BYTES) {
				/* Room for an O_DIRECT read of the blocks around it, from a page
				 * boundary (see direct_prepare). */
				pos = (pos + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
				win->pieces[n].data = pos + (off & (DIRECT_BLOCK - 1));
				pos += ((off & (DIRECT_BLOCK - 1)) + bytes + DIRECT_BLOCK - 1) &
					~(size_t)(DIRECT_BLOCK - 1);
			} else {
				pos = (pos + 63) & ~(size_t)63;
				win->pieces[n].data = pos;
				pos += bytes;
			}
			if (pos > l->window_bytes)
				goto too_big;
			win->pieces[n].slot = slot;
			win->pieces[n].nr = nr;
			r->op_shard[n] = s;
			r->ops[n] = (struct read_op){
				.fd = (int)s, /* shard index until pinned */
				.off = off,
				.len = (uint32_t)bytes,
				.dst = win->buf + win->pieces[n].data,
			};
			n++;
			g += nr;
			slot += nr;
			left -= nr;
		}
	}
	win->nr_pieces = n;
	ret = read_ops(r, n, true, err, errlen);
	unpin_shards(r);
	return ret;
too_big:
	/* Cannot happen: window_bytes and max_pieces bound every window; say so if it does. */
	snprintf(err, errlen, "window %llu of epoch %llu does not fit its buffer",
		(unsigned long long)index, (unsigned long long)epoch);
	return -EINVAL;
}

static struct window *window_find(struct loader *l, uint64_t epoch, uint64_t index)
{
	for (int i = 0; i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (win->state != WINDOW_FREE && win->epoch == epoch && win->index == index)
			return win;
	}
	return NULL;
}

/* A window to read another into: a free one, else the least recently used ready one nobody
 * copies from, other than keep. NULL when there is none now. Called under l->lock. */
static struct window *window_victim(struct loader *l, const struct window *keep)
{
	struct window *victim = NULL;

	for (int i = 0; i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (win->state == WINDOW_FREE)
			return win;
		if (win->state == WINDOW_READY && !win->users && win != keep &&
			(!victim || win->last_use < victim->last_use))
			victim = win;
	}
	return victim;
}

/* Reads window (epoch, index) into victim, which the caller set LOADING; entered and left
 * under l->lock, which it drops for the reads. */
static int window_fill(struct reader *r, struct window *victim, uint64_t epoch, uint64_t index,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	int ret;

	victim->state = WINDOW_LOADING;
	victim->epoch = epoch;
	victim->index = index;
	pthread_mutex_unlock(&l->lock);
	ret = window_load(r, victim, epoch, index, err, errlen);
	pthread_mutex_lock(&l->lock);
	victim->state = ret < 0 ? WINDOW_FREE : WINDOW_READY;
	victim->last_use = ++l->window_clock;
	pthread_cond_broadcast(&l->window_cond);
	return ret;
}

/* The window (epoch, index), read now if no reader has it or is reading it, with a use taken
 * (window_put gives it back). 0, or -errno with err set when reading it failed. */
static int window_get(struct reader *r, uint64_t epoch, uint64_t index, struct window **out,
	char *err, size_t errlen)
{
	struct loader *l = r->l;
	struct window *win;
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		win = window_find(l, epoch, index);
		if (win && win->state == WINDOW_READY) {
			win->users++;
			win->last_use = ++l->window_clock;
			break;
		}
		if (!win && (win = window_victim(l, NULL))) {
			ret = window_fill(r, win, epoch, index, err, errlen);
			if (ret < 0) {
				win = NULL;
				break;
			}
			continue;
		}
		/* Another reader is reading it, or every window is in use for a moment. */
		pthread_cond_wait(&l->window_cond, &l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	*out = win;
	return ret;
}

static void window_put(struct loader *l, struct window *win)
{
	pthread_mutex_lock(&l->lock);
	if (!--win->users)
		pthread_cond_broadcast(&l->window_cond);
	pthread_mutex_unlock(&l->lock);
}

/* Reads the window after (epoch, index) ahead of use, when a window can take it without
 * waiting; a failure is left for the batch that needs it to meet and report. Called under
 * l->lock. */
static void window_prefetch(struct reader *r, uint64_t epoch, uint64_t index)
{
	struct loader *l = r->l;
	struct window *victim, *keep = window_find(l, epoch, index);
	char err[8];

	if (index + 1 < l->sampler.nr_windows ||
		(index + 1 == l->sampler.nr_windows && l->sampler.tail_samples)) {
		index++;
	} else {
		epoch++;
		index = 0;
	}
	if (window_find(l, epoch, index))
		return;
	victim = window_victim(l, keep);
	if (victim)
		window_fill(r, victim, epoch, index, err, sizeof(err));
}

/* Rows of a shuffled batch: each sample's T + 1 tokens come out of the window holding it,
 * widened straight into the batch (and copied raw into the staging buffer for the GPU). The
 * rows lie at random in a window larger than the CPU's caches: each is fetched while the one
 * before it is widened (into inputs, then from the cache again into targets). */
static int fill_from_window(struct reader *r, struct loader_slot *slot, char *raw,
	const struct loader_state *st)
{
	struct loader *l = r->l;
	const uint32_t B = l->cfg.batch, T = l->cfg.seq_len, w = l->ds.token_bytes;
	const size_t row_bytes = (size_t)(T + 1) * w;
	uint64_t index = sampler_window(&l->sampler, st->position);
	int32_t *inputs = slot->wide, *targets = slot->wide + (size_t)B * T;
	const char **rows = r->rows;
	struct window *win;
	int ret;

	ret = window_get(r, st->epoch, index, &win, slot->errmsg, sizeof(slot->errmsg));
	if (ret < 0)
		return ret;
	for (uint32_t j = 0; j < B && win->nr_pieces; j++) {
		uint64_t t = sampler_window_slot(&l->sampler, st->epoch, st->position, j);
		uint32_t lo = 0, hi = win->nr_pieces - 1;
		const struct window_piece *p;

		while (lo < hi) { /* the last piece starting at or before t */
			uint32_t mid = (lo + hi + 1) / 2;

			if (win->pieces[mid].slot <= t)
				lo = mid;
			else
				hi = mid - 1;
		}
		p = &win->pieces[lo];
		rows[j] = win->buf + p->data + (t - p->slot) * T * w;
	}
	for (uint32_t j = 0; j < B && win->nr_pieces; j++) {
		int32_t *in = inputs + (size_t)j * T, *tg = targets + (size_t)j * T;

		if (j + 1 < B)
			for (size_t b = 0; b < row_bytes; b += 64)
				__builtin_prefetch(rows[j + 1] + b);
		widen_run(rows[j], w, T, in);
		widen_run(rows[j] + w, w, T, tg);
		if (l->cfg.device >= 0)
			memcpy(raw + (size_t)j * row_bytes, rows[j], row_bytes);
	}
	window_put(l, win);
	slot->row_stride = T + 1;
	slot->inputs = inputs;
	slot->targets = targets;
	return 0;
}

/* ---- the cufile path (GPUDirect Storage) ---- */

/* Turns the cufile path off for good after a cuFile failure; the host fast path goes on. */
static void cufile_failed(struct loader *l, const char *what, int err)
{
	bool on = true;

	if (!atomic_compare_exchange_strong(&l->cufile_ok, &on, false))
		return;
	say(l, "cufile: %s: %s; using the host fast path from now on", what, strerror(-err));
	if (atomic_load(&l->direct_allowed)) {
		int p = PATH_CUFILE;

		atomic_compare_exchange_strong(&l->path, &p, PATH_DIRECT);
	}
}

/* A file-order batch by the cufile path: each op's range made resident (FERRY_IOC_RESIDENT, as
 * on the host fast path), the 4 KiB-aligned cover of it read with cuFileRead from the cache
 * file into the reader's registered device buffer (cuFile accepts unaligned ranges, but
 * aligned ones go straight by DMA), the op's bytes copied from there into the slot's device
 * buffer at the host path's layout, and widened on the GPU. 0 when the batch is staged; else
 * -errno, nothing is staged, ops are as the caller built them, and the caller reads the batch
 * by the host path (after a cuFile failure, every batch from then on). */
static int cufile_fill(struct reader *r, uint32_t slot_idx, uint32_t nr_ops, const char *raw)
{
	struct loader *l = r->l;
	struct loader_slot *slot = &l->slots[slot_idx];
	const size_t bt = (size_t)l->cfg.batch * l->cfg.seq_len;
	char *d_raw = stage_device_buffer(l->stage, slot_idx);
	uint64_t pos = 0;
	int64_t n;
	int ret;

	/* One group only: a batch over more shards than that goes by the host path. */
	if (group_end(r, 0, nr_ops) < nr_ops)
		return -EOPNOTSUPP;
	ret = pin_shards(r, 0, nr_ops, slot->errmsg, sizeof(slot->errmsg));
	for (uint32_t i = 0; ret == 0 && i < nr_ops; i++) {
		struct read_op *op = &r->ops[i];
		uint32_t s = r->op_shard[i];
		struct direct_fd *d = &r->dfds[s % l->nr_dfds];
		uint64_t a_off = op->off & ~(uint64_t)(DIRECT_ALIGN - 1);
		uint64_t a_end = (op->off + op->len + DIRECT_ALIGN - 1) &
			~(uint64_t)(DIRECT_ALIGN - 1);
		uint64_t c_off, c_end;
		int fd;

		if (!r->on_ferry[i] || !d_raw) {
			ret = -EOPNOTSUPP; /* this batch only: a shard off the mount */
			break;
		}
		/* The sums are not checked on this path (see choose_path). */
		block_cover(op->off, op->len, l->ds.shards[s].file_bytes, &c_off, &c_end);
		fd = direct_resident_fd(r, s, op->fd, c_off, c_end, r->sums);
		if (fd < 0) {
			ret = fd; /* counted by direct_failed, as on the host fast path */
			break;
		}
		if (!d->cufile && (ret = gds_handle_register(l->gds, fd, &d->cufile)) < 0) {
			cufile_failed(l, "cuFileHandleRegister of the cache file", ret);
			break;
		}
		if (pos + (a_end - a_off) > l->bounce_bytes) {
			ret = -ENOSPC; /* cannot happen: bounce_bytes covers every op's pages */
			break;
		}
		n = gds_read(r->gds, d->cufile, a_off, a_end - a_off, pos);
		if (n < (int64_t)(op->off + op->len - a_off)) {
			ret = n < 0 ? (int)n : -EIO;
			cufile_failed(l, "cuFileRead of the cache file", ret);
			held_forget(l, s);
			break;
		}
		ret = gds_copy(r->gds, d_raw + ((const char *)op->dst - raw), pos + (op->off - a_off),
			op->len);
		if (ret < 0) {
			cufile_failed(l, "copying on the GPU", ret);
			break;
		}
		atomic_fetch_add(&l->nr_direct_reads, 1);
		pos += a_end - a_off;
	}
	if (ret == 0) {
		ret = stage_widen_device(l->stage, slot_idx, gds_reader_stream(r->gds),
			l->ds.token_bytes, slot->row_stride, slot->wide, slot->wide + bt);
		if (ret < 0)
			cufile_failed(l, "widening on the GPU", ret);
	}
	if (ret == 0) {
		slot->inputs = slot->wide;
		slot->targets = slot->wide + bt;
	} else {
		/* Nothing queued may land in the slot after the host path fills it. */
		gds_sync(r->gds);
		slot->errmsg[0] = '\0';
		for (uint32_t i = 0; i < nr_ops; i++)
			r->ops[i].fd = (int)r->op_shard[i];
	}
	unpin_shards(r);
	return ret;
}

/* Reads the batch at st into slot: shuffled, out of its window; in file order, with one read
 * for the B samples when they lie end to end in one shard, else one read per sample; then
 * widens them. */
static int fill_batch(struct reader *r, uint32_t slot_idx, const struct loader_state *st)
{
	struct loader *l = r->l;
	struct loader_slot *slot = &l->slots[slot_idx];
	struct dataset *ds = &l->ds;
	const uint32_t B = l->cfg.batch, T = l->cfg.seq_len, w = ds->token_bytes;
	char *raw = stage_host_buffer(l->stage, slot_idx);
	uint32_t nr_ops = 0;
	bool run = true;
	int ret;

	slot->errmsg[0] = '\0';
	if (l->sampler.shuffle)
		return fill_from_window(r, slot, raw, st);
	/* shards[] and first_sample are read-only after open: no lock to find a sample. */
	for (uint32_t j = 0; j < B; j++) {
		uint64_t g = sampler_sample(&l->sampler, st->epoch, st->position, j);
		uint32_t s = dataset_find(ds, g);
		uint64_t off = ds->data_offset + (g - ds->shards[s].first_sample) * T * w;

		if (j > 0 && (s != r->op_shard[0] || off != r->ops[0].off + (uint64_t)j * T * w))
			run = false;
		r->op_shard[j] = s;
		r->ops[j] = (struct read_op){
			.fd = (int)s, /* shard index until pinned */
			.off = off,
			.len = (T + 1) * w,
			.dst = raw + (size_t)j * (T + 1) * w,
		};
	}
	nr_ops = B;
	if (run) {
		r->ops[0].len = ((uint64_t)B * T + 1) * w;
		nr_ops = 1;
	}
	slot->row_stride = run ? T : T + 1;
	if (r->gds && atomic_load(&l->cufile_ok) && atomic_load(&l->direct_allowed) &&
		cufile_fill(r, slot_idx, nr_ops, raw) == 0)
		return 0;
	ret = read_ops(r, nr_ops, false, slot->errmsg, sizeof(slot->errmsg));
	if (ret < 0)
		goto out;
	if (run) {
		/* One run of B*T+1 tokens: targets are inputs shifted by one, in the same array. */
		widen_run(r->run_src ? r->run_src : raw, w, (size_t)B * T + 1, slot->wide);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + 1;
	} else {
		widen_rows(raw, w, B, T, T + 1, slot->wide, slot->wide + (size_t)B * T);
		slot->inputs = slot->wide;
		slot->targets = slot->wide + (size_t)B * T;
	}
out:
	unpin_shards(r);
	return ret;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct loader *l = r->l;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		struct loader_state st;
		int slot = ring_fill_slot(&l->ring);
		int ret;

		if (slot < 0 || l->reader_paused) {
			pthread_cond_wait(&l->fill_cond, &l->lock);
			continue;
		}
		/* Claim the slot and its batch; other readers claim the following ones. */
		st = l->fill_state;
		sampler_advance(&l->sampler, &l->fill_state);
		ring_claimed(&l->ring);
		l->nr_busy++;
		pthread_mutex_unlock(&l->lock);

		ret = stage_reclaim(l->stage, (uint32_t)slot);
		if (ret == 0)
			ret = fill_batch(r, (uint32_t)slot, &st);
		else
			snprintf(l->slots[slot].errmsg, sizeof(l->slots[slot].errmsg),
				"waiting for the copy to the GPU failed");
		if (ret < 0 && ret != -EINVAL && ret != -ENOMEM)
			ret = -EIO;
		l->slots[slot].state = st;
		l->slots[slot].err = ret;

		pthread_mutex_lock(&l->lock);
		l->nr_busy--;
		ring_complete(&l->ring, (uint32_t)slot);
		if (ret < 0)
			l->reader_paused = true;
		pthread_cond_broadcast(&l->ready_cond);
		/* The next window is read while this one is used (and the ring is full). */
		if (ret == 0 && l->sampler.shuffle && !l->stop)
			window_prefetch(r, st.epoch, sampler_window(&l->sampler, st.position));
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* ---- the public API ---- */

/* Readers: FERRY_LOADER_THREADS, else one per CPU up to 4; never more than the slots the
 * consumer does not hold. Filling (reads and widening) is per batch, so readers scale until
 * memory bandwidth or the CPUs run out. */
static uint32_t nr_readers(uint32_t nr_slots)
{
	const char *env = getenv("FERRY_LOADER_THREADS");
	long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);

	if (n > 4 && !env)
		n = 4;
	if (n > (long)nr_slots - 1)
		n = (long)nr_slots - 1;
	if (n > MAX_READERS)
		n = MAX_READERS;
	return n < 1 ? 1 : (uint32_t)n;
}

/* Descriptors: the dataset keeps ds.max_open shards open (an eighth of RLIMIT_NOFILE, at
 * most 128), shared among the readers so that their pins never exceed it; the fast path's
 * cache files take as many again at most, two fds per direct_fd slot of each reader. */
static void fd_budget(struct loader *l)
{
	uint32_t slots = l->ds.max_open / (2 * l->nr_readers);

	l->nr_dfds = slots < 1 ? 1 : slots > DIRECT_NR_FDS ? DIRECT_NR_FDS : slots;
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++) {
		uint32_t pins = l->ds.max_open / l->nr_readers;

		l->readers[i].max_pins = pins < 1 ? 1 : pins;
	}
}

static void choose_path(struct loader *l)
{
	const char *io = getenv("FERRY_LOADER_IO");
	const char *direct = getenv("FERRY_LOADER_DIRECT");
	const char *cufile = getenv("FERRY_LOADER_CUFILE");
	enum read_path p;

	l->force_pread = io && strcmp(io, "pread") == 0;
	atomic_store(&l->nowait_ok, !(io && strcmp(io, "uring") == 0));
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		if (l->force_pread || read_uring_new(&r->uring, 64) < 0)
			r->uring = NULL;
	}
	p = l->readers[0].uring ? PATH_URING : PATH_PREAD;
	/* The fast path is tried when the first shard is on a ferry mount; each shard is probed
	 * again when first read, and any failure falls back to p. */
	atomic_store(&l->direct_allowed, !(direct && strcmp(direct, "0") == 0) &&
		l->ds.nr_shards && probe_ferry(l->ds.shards[0].path));
	if (atomic_load(&l->direct_allowed)) {
		p = PATH_DIRECT;
		/* GPUDirect Storage: with libcufile the cache file is read straight into device
		 * memory. Batches in file order only: a shuffled batch gathers its rows out of a
		 * window read into host memory. What lands in device memory is not checked
		 * against the daemon's block checksums (that would take a checksum kernel on the
		 * GPU, or a copy back, which is what this path exists to avoid), so it is taken
		 * only when asked for, FERRY_LOADER_CUFILE=1, and says so. */
		if (l->cfg.device >= 0 && !l->cfg.shuffle && cufile && strcmp(cufile, "1") == 0) {
			char why[160];
			int ret = gds_open(&l->gds, l->cfg.device, why, sizeof(why));

			if (ret == 0) {
				p = PATH_CUFILE;
				atomic_store(&l->cufile_ok, true);
				say(l, "cufile: FERRY_LOADER_CUFILE=1: reads straight into GPU memory "
					"are not checked against the cache's checksums");
			} else if (ret != -ENOSYS || l->cfg.verbose) {
				say(l, "cufile: %s; using %s", why, path_names[p]);
			}
		}
	}
	atomic_store(&l->path, p);
	if (l->cfg.verbose)
		say(l, "%u shards, %llu samples, %s %u-byte tokens, read path %s, %u readers, "
			"staging %s", l->ds.nr_shards, (unsigned long long)l->ds.nr_samples,
			shard_format_name(l->ds.format), l->ds.token_bytes, path_names[p],
			l->nr_readers, stage_name());
	if (l->cfg.verbose && l->cfg.shuffle)
		say(l, "shuffle: blocks of %llu samples, windows of %u blocks per rank (%zu bytes "
			"each, %d kept), %llu whole windows and a tail of %llu samples per epoch",
			(unsigned long long)l->sampler.block_samples, l->sampler.window_blocks,
			l->window_bytes, NR_WINDOWS, (unsigned long long)l->sampler.nr_windows,
			(unsigned long long)l->sampler.tail_samples);
}

/* The shuffled order's block and window sizes, and what a window needs in memory. */
static int order_params(struct loader *l, char *err, size_t errlen)
{
	const struct dataset *ds = &l->ds;
	const uint64_t B = l->cfg.batch, T = l->cfg.seq_len, w = ds->token_bytes;
	uint64_t S, G, W = l->cfg.world_size, samples, bytes, pieces, in_place;

	l->block_bytes = l->cfg.block_bytes ? l->cfg.block_bytes : LOADER_DEFAULT_BLOCK_BYTES;
	l->window_blocks = l->cfg.window_blocks ? l->cfg.window_blocks :
		LOADER_DEFAULT_WINDOW_BLOCKS;
	if (l->block_bytes > LOADER_MAX_BLOCK_BYTES) {
		snprintf(err, errlen, "block of %u bytes: want 1 to %u", l->block_bytes,
			LOADER_MAX_BLOCK_BYTES);
		return -EINVAL;
	}
	if (l->window_blocks > LOADER_MAX_WINDOW_BLOCKS) {
		snprintf(err, errlen, "window of %u blocks: want 1 to %u", l->window_blocks,
			LOADER_MAX_WINDOW_BLOCKS);
		return -EINVAL;
	}
	if (!l->cfg.shuffle)
		return 0;
	/* As sampler_init rounds it. */
	S = l->block_bytes / (T * w);
	S = S ? (S + B - 1) / B * B : B;
	G = l->window_blocks;
	/* The largest window: a whole one, or the tail when there is no whole one. */
	samples = S * G;
	if (ds->nr_samples / (S * G * W) == 0)
		samples = ds->nr_samples / (B * W) * B;
	bytes = samples * (T + 1) * w;
	if (bytes > (4ull << 30)) {
		snprintf(err, errlen, "a shuffle window of %llu bytes is too large (block %u bytes, "
			"%u blocks)", (unsigned long long)bytes, l->block_bytes, l->window_blocks);
		return -EINVAL;
	}
	/* Each run splits where a shard ends; each piece holds a sample at least. */
	pieces = G + 1 + ds->nr_shards;
	if (pieces > samples)
		pieces = samples;
	l->max_pieces = (uint32_t)(pieces ? pieces : 1);
	/* Each piece may take 64 bytes of alignment, and each one read in place (at least
	 * DIRECT_MIN_BYTES long) a page of alignment and a block either side. */
	in_place = bytes / DIRECT_MIN_BYTES + 1;
	if (in_place > l->max_pieces)
		in_place = l->max_pieces;
	l->window_bytes = bytes + (size_t)l->max_pieces * 64 +
		(in_place + 1) * (2 * DIRECT_BLOCK + DIRECT_ALIGN);
	return 0;
}

int loader_open(struct loader **out, const struct loader_config *cfg, char *errbuf, size_t errlen)
{
	struct loader *l;
	uint32_t B = cfg->batch, T = cfg->seq_len, W = cfg->world_size ? cfg->world_size : 1;
	char dummy[8];
	uint64_t max_bytes;
	int ret;

	if (!errbuf || !errlen) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*out = NULL;
	if (B == 0 || T == 0) {
		snprintf(errbuf, errlen, "batch and seq_len must be positive");
		return -EINVAL;
	}
	if (cfg->rank >= W) {
		snprintf(errbuf, errlen, "rank %u is not below world size %u", cfg->rank, W);
		return -EINVAL;
	}
	/* One read of a whole batch must fit a read_op (u32 length); 1 GiB per batch is far
	 * beyond any sane B*T. */
	max_bytes = ((uint64_t)B * (T + 1) + 1) * 4;
	if (max_bytes > (1ull << 30)) {
		snprintf(errbuf, errlen, "batch %u x seq_len %u is too large", B, T);
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->ds_lock, NULL);
	pthread_mutex_init(&l->held_lock, NULL);
	pthread_cond_init(&l->fill_cond, NULL);
	pthread_cond_init(&l->window_cond, NULL);
	pthread_cond_init(&l->ready_cond, NULL);
	l->cfg = *cfg;
	l->cfg.world_size = W;
	l->nr_slots = cfg->nr_buffers ? cfg->nr_buffers : 4;
	if (l->nr_slots > RING_MAX_SLOTS) {
		snprintf(errbuf, errlen, "%u buffers asked for; at most %u", l->nr_slots,
			RING_MAX_SLOTS);
		ret = -EINVAL;
		goto fail;
	}
	l->nr_readers = nr_readers(l->nr_slots);
	l->paths = strdup(cfg->paths ? cfg->paths : "");
	l->cfg.paths = l->paths;
	ret = -ENOMEM;
	if (!l->paths)
		goto nomem;
	ret = dataset_open(&l->ds, l->paths, cfg->format, T, errbuf, errlen);
	if (ret < 0)
		goto fail;
	/* Every header now, before the first batch: a bad shard is named at start, not hours
	 * in when the order reaches it. */
	ret = dataset_check_all(&l->ds, 8, errbuf, errlen);
	if (ret < 0)
		goto fail;
	ret = order_params(l, errbuf, errlen);
	if (ret < 0)
		goto fail;
	sampler_init(&l->sampler, l->ds.nr_samples, B, W, cfg->rank, cfg->seed, cfg->shuffle,
		l->block_bytes / ((uint64_t)T * l->ds.token_bytes), l->window_blocks);
	if (l->sampler.steps_per_epoch == 0) {
		snprintf(errbuf, errlen, "%s: %llu samples of %u+1 tokens, fewer than one step "
			"needs (batch %u x world %u)", l->paths, (unsigned long long)l->ds.nr_samples,
			T, B, W);
		ret = -EINVAL;
		goto fail;
	}
	l->raw_bytes = ((size_t)B * (T + 1) * l->ds.token_bytes + DIRECT_ALIGN - 1) &
		~(size_t)(DIRECT_ALIGN - 1);
	ret = stage_new(&l->stage, cfg->device, l->nr_slots, l->raw_bytes, B, T, errbuf, errlen);
	if (ret < 0)
		goto fail;
	ret = -ENOMEM;
	l->slots = calloc(l->nr_slots, sizeof(*l->slots));
	l->readers = calloc(l->nr_readers, sizeof(*l->readers));
	if (!l->slots || !l->readers)
		goto nomem;
	fd_budget(l);
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		r->l = l;
		for (int k = 0; k < DIRECT_NR_FDS; k++)
			r->dfds[k].fd = r->dfds[k].buffered_fd = -1;
		r->max_ops = B > l->max_pieces ? B : l->max_pieces;
		r->ops = calloc(r->max_ops, sizeof(*r->ops));
		r->copies = calloc(r->max_ops, sizeof(*r->copies));
		r->op_shard = calloc(r->max_ops, sizeof(*r->op_shard));
		r->on_ferry = calloc(r->max_ops, sizeof(*r->on_ferry));
		r->pinned = calloc(r->max_pins, sizeof(*r->pinned));
		r->group = calloc(r->max_pins, sizeof(*r->group));
		r->runs = calloc(SAMPLER_MAX_RUNS(&l->sampler), sizeof(*r->runs));
		r->rows = calloc(B, sizeof(*r->rows));
		if (!r->ops || !r->copies || !r->op_shard || !r->on_ferry || !r->pinned ||
			!r->group || !r->runs || !r->rows)
			goto nomem;
	}
	for (int i = 0; l->sampler.shuffle && i < NR_WINDOWS; i++) {
		struct window *win = &l->windows[i];

		if (posix_memalign((void **)&win->buf, DIRECT_ALIGN, l->window_bytes) != 0) {
			win->buf = NULL;
			goto nomem;
		}
		win->pieces = calloc(l->max_pieces, sizeof(*win->pieces));
		if (!win->pieces)
			goto nomem;
	}
	for (uint32_t i = 0; i < l->nr_slots; i++) {
		l->slots[i].wide = malloc((size_t)2 * B * T * sizeof(int32_t));
		if (!l->slots[i].wide)
			goto nomem;
	}
	choose_path(l);
	/* Each O_DIRECT read (at least DIRECT_MIN_BYTES) may span one more block at either end;
	 * and has a sum per block it spans. */
	l->bounce_bytes = l->raw_bytes + (l->raw_bytes / DIRECT_MIN_BYTES + 1) * 2 * DIRECT_BLOCK;
	if (atomic_load(&l->direct_allowed)) {
		size_t data = l->bounce_bytes > l->window_bytes ? l->bounce_bytes : l->window_bytes;

		l->held_sums = calloc((size_t)DIRECT_NR_HELD * FERRY_RESIDENT_MAX_SUMS,
			sizeof(*l->held_sums));
		if (!l->held_sums)
			goto nomem;
		for (int i = 0; i < DIRECT_NR_HELD; i++)
			l->held[i].sums = l->held_sums + (size_t)i * FERRY_RESIDENT_MAX_SUMS;
		for (uint32_t i = 0; i < l->nr_readers; i++) {
			struct reader *r = &l->readers[i];

			r->max_sums = (uint32_t)(data / DIRECT_BLOCK + 2 * (size_t)r->max_ops + 2);
			r->sums = calloc(r->max_sums, sizeof(*r->sums));
			if (!r->sums)
				goto nomem;
		}
	}
	for (uint32_t i = 0; atomic_load(&l->direct_allowed) && i < l->nr_readers; i++) {
		if (posix_memalign(&l->readers[i].bounce, DIRECT_ALIGN, l->bounce_bytes) != 0) {
			l->readers[i].bounce = NULL;
			goto nomem;
		}
	}
	for (uint32_t i = 0; atomic_load(&l->cufile_ok) && i < l->nr_readers; i++) {
		ret = gds_reader_new(l->gds, l->bounce_bytes, &l->readers[i].gds);
		if (ret < 0)
			cufile_failed(l, "registering a device buffer (cuFileBufRegister)", ret);
	}
	ring_init(&l->ring, l->nr_slots);
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		ret = pthread_create(&l->readers[i].thread, NULL, reader_main, &l->readers[i]);
		if (ret != 0) {
			snprintf(errbuf, errlen, "cannot start a reader thread: %s", strerror(ret));
			ret = -ret;
			goto fail;
		}
		l->readers[i].started = true;
	}
	*out = l;
	return 0;
nomem:
	snprintf(errbuf, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	loader_free(l);
	return ret;
}

void loader_free(struct loader *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_broadcast(&l->fill_cond);
	pthread_mutex_unlock(&l->lock);
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++)
		if (l->readers[i].started)
			pthread_join(l->readers[i].thread, NULL);
	if (l->cfg.verbose && atomic_load(&l->nr_direct_reads))
		say(l, "fast path: %llu reads of cache files needed %llu FERRY_IOC_RESIDENT calls; "
			"%llu blocks matched their checksums, %llu reads were redone through the "
			"mount", (unsigned long long)atomic_load(&l->nr_direct_reads),
			(unsigned long long)atomic_load(&l->nr_ioctls),
			(unsigned long long)atomic_load(&l->nr_verified_blocks),
			(unsigned long long)atomic_load(&l->nr_fallbacks));
	stage_free(l->stage);
	for (uint32_t i = 0; l->slots && i < l->nr_slots; i++)
		free(l->slots[i].wide);
	free(l->slots);
	for (uint32_t i = 0; l->readers && i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		free(r->ops);
		free(r->copies);
		free(r->op_shard);
		free(r->on_ferry);
		free(r->pinned);
		free(r->group);
		free(r->runs);
		free(r->rows);
		free(r->bounce);
		free(r->sums);
		gds_reader_free(r->gds);
		direct_close_all(r);
		read_uring_free(r->uring);
	}
	free(l->readers);
	free(l->held_sums);
	gds_free(l->gds);
	for (int i = 0; i < NR_WINDOWS; i++) {
		free(l->windows[i].buf);
		free(l->windows[i].pieces);
	}
	dataset_done(&l->ds);
	pthread_cond_destroy(&l->fill_cond);
	pthread_cond_destroy(&l->window_cond);
	pthread_cond_destroy(&l->ready_cond);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->ds_lock);
	pthread_mutex_destroy(&l->held_lock);
	free(l->paths);
	free(l);
}

int loader_next_batch(struct loader *l, struct loader_batch *b)
{
	struct loader_slot *slot;
	double t0 = now_ms();
	int s, ret;

	memset(b, 0, sizeof(*b));
	pthread_mutex_lock(&l->lock);
	if (l->sticky_err) {
		ret = l->sticky_err;
		pthread_mutex_unlock(&l->lock);
		return ret;
	}
	/* The batch handed out last time is given back now: its buffers were valid until here. */
	ring_release_all(&l->ring);
	pthread_cond_broadcast(&l->fill_cond);
	while ((s = ring_take_slot(&l->ring)) < 0)
		pthread_cond_wait(&l->ready_cond, &l->lock);
	ring_taken(&l->ring);
	slot = &l->slots[s];
	if (slot->err) {
		l->sticky_err = slot->err;
		snprintf(l->last_error, sizeof(l->last_error), "%s", slot->errmsg);
		pthread_mutex_unlock(&l->lock);
		return slot->err;
	}
	l->next_state = slot->state;
	sampler_advance(&l->sampler, &l->next_state);
	pthread_mutex_unlock(&l->lock);

	b->wait_ms = now_ms() - t0;
	b->inputs = slot->inputs;
	b->targets = slot->targets;
	b->state = slot->state;
	ret = stage_upload(l->stage, (uint32_t)s, l->ds.token_bytes, slot->row_stride, b);
	if (ret < 0)
		snprintf(l->last_error, sizeof(l->last_error), "copy to the GPU failed");
	return ret;
}

void loader_get_state(const struct loader *l, struct loader_state *st)
{
	struct loader *m = (struct loader *)l;

	pthread_mutex_lock(&m->lock);
	*st = m->next_state;
	pthread_mutex_unlock(&m->lock);
}

int loader_seek(struct loader *l, const struct loader_state *st)
{
	if (st->position >= l->sampler.steps_per_epoch) {
		snprintf(l->last_error, sizeof(l->last_error), "%s: position %llu is past the %llu "
			"steps of an epoch", l->paths, (unsigned long long)st->position,
			(unsigned long long)l->sampler.steps_per_epoch);
		return -EINVAL;
	}
	pthread_mutex_lock(&l->lock);
	while (l->nr_busy)
		pthread_cond_wait(&l->ready_cond, &l->lock);
	ring_release_all(&l->ring);
	ring_reset(&l->ring);
	l->fill_state = *st;
	l->next_state = *st;
	l->reader_paused = false;
	l->sticky_err = 0;
	pthread_cond_broadcast(&l->fill_cond);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

uint64_t loader_steps_per_epoch(const struct loader *l)
{
	return l->sampler.steps_per_epoch;
}

uint32_t loader_vocab_size(const struct loader *l)
{
	return l->ds.vocab;
}

void loader_get_order(const struct loader *l, uint32_t *block_bytes, uint32_t *window_blocks)
{
	*block_bytes = l->block_bytes;
	*window_blocks = l->window_blocks;
}

const char *loader_path_name(const struct loader *l)
{
	return path_names[atomic_load(&((struct loader *)l)->path)];
}

const char *loader_last_error(const struct loader *l)
{
	return l->last_error;
}

uint32_t loader_declared_vocab(const struct loader *l)
{
	return l->ds.declared_vocab;
}

int loader_shard_files(const struct loader *l, uint32_t i, const char **path,
	const char **idx_path)
{
	if (i >= l->ds.nr_shards)
		return -ENOENT;
	*path = l->ds.shards[i].path;
	*idx_path = l->ds.shards[i].idx_path;
	return 0;
}

void loader_token_source(const struct loader *l, const struct loader_state *st, uint32_t j,
	uint32_t k, const char **path, uint64_t *index)
{
	uint64_t g = sampler_sample(&l->sampler, st->epoch, st->position, j);
	const struct shard *sh = &l->ds.shards[dataset_find(&l->ds, g)];

	*path = sh->path;
	*index = (g - sh->first_sample) * l->cfg.seq_len + k;
}
