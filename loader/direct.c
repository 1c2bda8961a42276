/* The loader's direct paths: a file on a ferry mount is read from the daemon's cache file
 * itself, with O_DIRECT (or from the page cache), the range made resident and held by
 * FERRY_IOC_RESIDENT and every block checked against the sums the daemon answered; what does
 * not match is read again through the mount. With FERRY_LOADER_CUFILE=1 and a GPU, the cufile
 * path reads the cache file straight into device memory instead. loader.c's readers call in
 * here (loader_i.h); everything fails over to the plain reads. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"
#include "loader/loader_i.h"

#define DIRECT_HOLD_MS 30000u
/* A remembered resident range is trusted for reads that start at least this long before its
 * hold expires: a read of a batch takes milliseconds, so this is a wide margin. */
#define DIRECT_MARGIN_MS 5000.0
/* After this many failed fast-path reads the loader stops trying it. */
#define DIRECT_MAX_FAILS 8

bool direct_probe(const char *path)
{
	return getxattr(path, FERRY_XATTR_SOURCE, NULL, 0) >= 0;
}

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
		loader_say(l, "ferry fast path: %s: %s; reading through the mount instead", what,
			strerror(-err));
	if (n >= DIRECT_MAX_FAILS &&
		atomic_compare_exchange_strong(&l->direct_allowed, &allowed, false)) {
		atomic_store(&l->path, l->readers[0].uring ? PATH_URING : PATH_PREAD);
		loader_say(l, "ferry fast path failed %u times; using %s from now on", n,
			loader_path_name(l));
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
	loader_say(l,
		"ferry fast path: the daemon gives no block checksums to check its cache file "
		"against; reading through the mount (%s)",
		loader_path_name(l));
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
	double t = loader_now_ms();
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
static void direct_fallback(struct loader *l, uint32_t s, uint64_t off, uint64_t end, bool mismatch)
{
	_Atomic bool *said = mismatch ? &l->said_mismatch : &l->said_missing;
	bool no = false;

	atomic_fetch_add(&l->nr_fallbacks, 1);
	if (atomic_compare_exchange_strong(said, &no, true))
		loader_say(l,
			"%s: bytes %llu-%llu of the cache file: %s; reading them through the mount "
			"(further ones are counted, not said)",
			l->ds.shards[s].path, (unsigned long long)off, (unsigned long long)end,
			mismatch ? "a block does not match its checksum"
				 : "the daemon gave no checksum for a block");
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

/* ---- a group of reads ---- */

uint32_t direct_prepare_group(struct reader *r, uint32_t first, uint32_t end, bool in_place)
{
	struct loader *l = r->l;
	uint32_t nr_copies = 0;
	size_t bounce_pos = 0;

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
	return nr_copies;
}

void direct_check_group(struct reader *r, uint32_t nr_copies, bool in_place, bool lone)
{
	struct loader *l = r->l;

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
		*op = (struct read_op){ .fd = cp->plain_fd,
			.off = cp->plain_off,
			.len = cp->len,
			.need = cp->len,
			.dst = cp->dst };
		if (read_pread_run(op, 1) < 0)
			return;
	}
}

/* ---- the cufile path (GPUDirect Storage) ---- */

/* Turns the cufile path off for good after a cuFile failure; the host fast path goes on. */
static void cufile_failed(struct loader *l, const char *what, int err)
{
	bool on = true;

	if (!atomic_compare_exchange_strong(&l->cufile_ok, &on, false))
		return;
	loader_say(l, "cufile: %s: %s; using the host fast path from now on", what, strerror(-err));
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
int cufile_fill(struct reader *r, uint32_t slot_idx, uint32_t nr_ops, const char *raw)
{
	struct loader *l = r->l;
	struct loader_slot *slot = &l->slots[slot_idx];
	const size_t bt = (size_t)l->cfg.batch * l->cfg.seq_len;
	char *d_raw = stage_device_buffer(l->stage, slot_idx);
	uint64_t pos = 0;
	int64_t n;
	int ret;

	/* One group only: a batch over more shards than that goes by the host path. */
	if (reader_group_end(r, 0, nr_ops) < nr_ops)
		return -EOPNOTSUPP;
	ret = reader_pin_shards(r, 0, nr_ops, slot->errmsg, sizeof(slot->errmsg));
	for (uint32_t i = 0; ret == 0 && i < nr_ops; i++) {
		struct read_op *op = &r->ops[i];
		uint32_t s = r->op_shard[i];
		struct direct_fd *d = &r->dfds[s % l->nr_dfds];
		uint64_t a_off = op->off & ~(uint64_t)(DIRECT_ALIGN - 1);
		uint64_t a_end =
			(op->off + op->len + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
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
		ret = gds_copy(r->gds, d_raw + ((const char *)op->dst - raw),
			pos + (op->off - a_off), op->len);
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
	reader_unpin_shards(r);
	return ret;
}

/* ---- setup and teardown ---- */

enum read_path direct_choose_path(struct loader *l, enum read_path plain)
{
	const char *direct = getenv("FERRY_LOADER_DIRECT");
	const char *cufile = getenv("FERRY_LOADER_CUFILE");
	enum read_path p = PATH_DIRECT;

	/* The fast path is tried when the first shard is on a ferry mount; each shard is probed
	 * again when first read, and any failure falls back to plain. */
	atomic_store(&l->direct_allowed, !(direct && strcmp(direct, "0") == 0) && l->ds.nr_shards &&
						 direct_probe(l->ds.shards[0].path));
	if (!atomic_load(&l->direct_allowed))
		return plain;
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
			loader_say(l,
				"cufile: FERRY_LOADER_CUFILE=1: reads straight into GPU memory "
				"are not checked against the cache's checksums");
		} else if (ret != -ENOSYS || l->cfg.verbose) {
			loader_say(l, "cufile: %s; using %s", why, read_path_name(p));
		}
	}
	return p;
}

int direct_setup(struct loader *l)
{
	size_t data;

	/* Each O_DIRECT read (at least DIRECT_MIN_BYTES) may span one more block at either end;
	 * and has a sum per block it spans. */
	l->bounce_bytes = l->raw_bytes + (l->raw_bytes / DIRECT_MIN_BYTES + 1) * 2 * DIRECT_BLOCK;
	if (!atomic_load(&l->direct_allowed))
		return 0;
	data = l->bounce_bytes > l->window_bytes ? l->bounce_bytes : l->window_bytes;
	l->held_sums =
		calloc((size_t)DIRECT_NR_HELD * FERRY_RESIDENT_MAX_SUMS, sizeof(*l->held_sums));
	if (!l->held_sums)
		return -ENOMEM;
	for (int i = 0; i < DIRECT_NR_HELD; i++)
		l->held[i].sums = l->held_sums + (size_t)i * FERRY_RESIDENT_MAX_SUMS;
	for (uint32_t i = 0; i < l->nr_readers; i++) {
		struct reader *r = &l->readers[i];

		r->max_sums = (uint32_t)(data / DIRECT_BLOCK + 2 * (size_t)r->max_ops + 2);
		r->sums = calloc(r->max_sums, sizeof(*r->sums));
		if (!r->sums)
			return -ENOMEM;
		if (posix_memalign(&r->bounce, DIRECT_ALIGN, l->bounce_bytes) != 0) {
			r->bounce = NULL;
			return -ENOMEM;
		}
	}
	for (uint32_t i = 0; atomic_load(&l->cufile_ok) && i < l->nr_readers; i++) {
		int ret = gds_reader_new(l->gds, l->bounce_bytes, &l->readers[i].gds);

		if (ret < 0)
			cufile_failed(l, "registering a device buffer (cuFileBufRegister)", ret);
	}
	return 0;
}

void direct_reader_done(struct reader *r)
{
	free(r->bounce);
	free(r->sums);
	gds_reader_free(r->gds);
	direct_close_all(r);
}

void direct_done(struct loader *l)
{
	if (l->cfg.verbose && atomic_load(&l->nr_direct_reads))
		loader_say(l,
			"fast path: %llu reads of cache files needed %llu FERRY_IOC_RESIDENT "
			"calls; %llu blocks matched their checksums, %llu reads were redone through "
			"the mount",
			(unsigned long long)atomic_load(&l->nr_direct_reads),
			(unsigned long long)atomic_load(&l->nr_ioctls),
			(unsigned long long)atomic_load(&l->nr_verified_blocks),
			(unsigned long long)atomic_load(&l->nr_fallbacks));
	free(l->held_sums);
	gds_free(l->gds);
}
