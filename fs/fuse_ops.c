/* The FUSE low-level operations of a ferry mount: names and attributes from the namespace,
 * bytes from the fetch engine (cache first, then the remote); the control xattrs and ioctl
 * of ferry_ctl.h are ctl.c's. Everything that would modify answers EROFS. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs/cache.h"
#include "fs/dir_prefetch.h"
#include "fs/fetch.h"
#include "fs/fuse_i.h"
#include "fs/log.h"
#include "fs/namespace.h"

/* Readahead: after this many back-to-back reads, keep this many bytes ahead in flight. */
#define SEQUENTIAL_AFTER 2
/* 16 chunks of 8 MiB: as many as the fetcher's default 16 transfers, so readahead can use every
 * slot (64 MiB used half). Cold dd of 2 GiB, 2 shared cores, 5 runs alternated: 860-1200 MB/s
 * against 858-946 with 64 MiB. */
#define READAHEAD_BYTES (128ull << 20)

static void timeout_split(double s, struct fuse_entry_param *e)
{
	e->attr_timeout = s;
	e->entry_timeout = s;
}

/* ---- names and attributes ---- */

static void ferry_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ferryfs *fs = fs_of(req);
	struct fuse_entry_param e = { 0 };
	int ret;

	count_op(fs, FERRY_OP_LOOKUP);
	ret = namespace_lookup(fs->ns, parent, name, &e.attr);
	if (ret == -ENOENT) {
		/* A negative entry: the kernel remembers the absence for the ttl (python imports
		 * and shells probe many missing names). */
		timeout_split(fs->timeout_s, &e);
		e.ino = 0;
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = e.attr.st_ino;
	timeout_split(fs->timeout_s, &e);
	fuse_reply_entry(req, &e);
}

static void ferry_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct ferryfs *fs = fs_of(req);

	count_op(fs, FERRY_OP_FORGET);
	namespace_forget(fs->ns, ino, nlookup);
	fuse_reply_none(req);
}

static void ferry_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct ferryfs *fs = fs_of(req);

	count_op(fs, FERRY_OP_FORGET);
	for (size_t i = 0; i < count; i++)
		namespace_forget(fs->ns, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void ferry_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_node *n = namespace_get(fs->ns, ino);
	struct stat st;

	count_op(fs, FERRY_OP_GETATTR);
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	namespace_stat(fs->ns, n, &st);
	namespace_put(fs->ns, n);
	fuse_reply_attr(req, &st, fs->timeout_s);
}

static void ferry_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_node *n = namespace_get(fs->ns, ino);
	char *target = NULL;
	int ret;

	count_op(fs, FERRY_OP_READLINK);
	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	ret = namespace_readlink(fs->ns, n, &target);
	namespace_put(fs->ns, n);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_readlink(req, target);
	free(target);
}

/* ---- directories ---- */

static void ferry_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_dir *d;
	int ret;

	count_op(fs, FERRY_OP_OPENDIR);
	ret = namespace_dir_open(fs->ns, ino, &d);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)d;
	/* The listing is fixed for the ttl: let the kernel keep what it read. */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		namespace_dir_free(fs->ns, d);
}

static void do_readdir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi, bool plus)
{
	struct ferryfs *fs = fs_of(req);
	struct ns_dir *d = (struct ns_dir *)(uintptr_t)fi->fh;
	char *buf = malloc(size ? size : 1);
	size_t used = 0;

	count_op(fs, FERRY_OP_READDIR);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Offsets: 1 after ".", 2 after "..", i + 3 after child i. */
	for (off_t i = off; i < (off_t)d->nr_entries + 2; i++) {
		struct fuse_entry_param e = { 0 };
		struct ns_node *n = NULL;
		const char *name;
		size_t need;

		if (i < 2) {
			name = i == 0 ? "." : "..";
			e.attr.st_ino = i == 0 ? d->ino : d->parent_ino;
			e.attr.st_mode = S_IFDIR;
		} else {
			n = d->entries[i - 2].node;
			name = d->entries[i - 2].name;
			namespace_stat(fs->ns, n, &e.attr);
		}
		if (plus) {
			/* ino 0 on the dot entries: the kernel makes no dentry, counts no lookup. */
			if (n) {
				e.ino = e.attr.st_ino;
				timeout_split(fs->timeout_s, &e);
			}
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
				i + 1);
		} else {
			need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
				i + 1);
		}
		if (need > size - used)
			break;
		if (plus && n)
			namespace_count_lookup(fs->ns, n);
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void ferry_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	struct fuse_file_info *fi)
{
	do_readdir(req, size, off, fi, false);
}

static void ferry_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	struct fuse_file_info *fi)
{
	do_readdir(req, size, off, fi, true);
}

static void ferry_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);

	count_op(fs, FERRY_OP_RELEASEDIR);
	namespace_dir_free(fs->ns, (struct ns_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- files ---- */

static void file_free(struct ferryfs *fs, struct ferry_file *f)
{
	if (!f)
		return;
	cache_object_unref(f->co);
	namespace_object_done(&f->obj);
	namespace_put(fs->ns, f->node);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* The per-open path, measured with a PyTorch DataLoader that opens an np.memmap per sample
 * (40 MB file, warm, 2 shared cores, kernel 6.18): each sample costs the kernel's OPEN, an
 * IOCTL (Python's open() asks isatty, and FUSE forwards every ioctl, even to a daemon without
 * one) and RELEASE; no lookup, getattr, flush or read (entry and attribute timeouts, noflush,
 * keep_cache). The daemon's own work is under 5% of its time, the rest is the round trips:
 * os.open+close 18-55 us against 2 us on the source, Python's open+close 42-102 us against 4.
 * FUSE_CAP_NO_OPEN_SUPPORT would drop OPEN and RELEASE, but an open file would then no longer
 * keep the object version it opened (the kernel stops telling us about opens), which is what
 * s3_object_replaced_after_mount_never_mixes checks. */
static void ferry_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);
	struct ferry_file *f;
	int ret;

	count_op(fs, FERRY_OP_OPEN);
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->node = namespace_get(fs->ns, ino);
	if (!f->node) {
		ret = -ESTALE;
		goto err;
	}
	ret = namespace_open_object(fs->ns, f->node, &f->obj);
	if (ret)
		goto err;
	ret = cache_object_open(fs->cache, &f->obj.obj, f->obj.version, &f->co);
	if (ret)
		goto err;
	if (fs->dir_prefetch)
		dir_prefetch_opened(fs->dir_prefetch, f->node,
			cache_object_cached_bytes(f->co) == f->obj.obj.size);
	fi->fh = (uintptr_t)f;
	/* Same object version as at the previous open: what the kernel holds is still right. */
	fi->keep_cache = f->obj.keep_cache;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		file_free(fs, f);
	return;
err:
	file_free(fs, f);
	fuse_reply_err(req, ret == -ESTALE ? ESTALE : -ret);
}

/* A per-thread read buffer, grown to the largest read seen (max_read, 1 MiB): a malloc and
 * page faults per request cost more than the copy itself. */
static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;

struct read_buf {
	size_t size;
	char *data;
};

static void read_buf_free(void *p)
{
	struct read_buf *b = p;

	if (b)
		free(b->data);
	free(b);
}

static void read_buf_key_init(void)
{
	pthread_key_create(&read_buf_key, read_buf_free);
}

static char *read_buf_get(size_t size)
{
	struct read_buf *b;

	pthread_once(&read_buf_once, read_buf_key_init);
	b = pthread_getspecific(read_buf_key);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return NULL;
		pthread_setspecific(read_buf_key, b);
	}
	if (b->size < size) {
		char *d = NULL;

		if (posix_memalign((void **)&d, 4096, size))
			return NULL;
		free(b->data);
		b->data = d;
		b->size = size;
	}
	return b->data;
}

/* Sequential detection: after a few reads that each start where the previous one ended, ask
 * the fetch engine for the next READAHEAD_BYTES in the background, once per chunk. */
static void detect_sequential(struct ferryfs *fs, struct ferry_file *f, uint64_t off, size_t len)
{
	uint64_t first = 0, n = 0, end_chunk = 0, nr_chunks;

	nr_chunks = (f->obj.obj.size + fs->chunk_bytes - 1) / fs->chunk_bytes;
	pthread_mutex_lock(&f->lock);
	if (off == f->next_off)
		f->nr_sequential++;
	else
		f->nr_sequential = 0;
	f->next_off = off + len;
	if (f->nr_sequential >= SEQUENTIAL_AFTER) {
		uint64_t window = READAHEAD_BYTES / fs->chunk_bytes;

		if (window < 2)
			window = 2;
		first = (off + len) / fs->chunk_bytes;
		end_chunk = first + window;
		if (end_chunk > nr_chunks)
			end_chunk = nr_chunks;
		if (first < f->prefetched_to)
			first = f->prefetched_to;
		if (first < end_chunk) {
			n = end_chunk - first;
			f->prefetched_to = end_chunk;
		}
	}
	pthread_mutex_unlock(&f->lock);
	if (n) {
		uint64_t next;

		fetcher_prefetch_sequential(fs->fetcher, f->co, first, n, &next);
		/* Stopped at the memory bound: the chunks not gone through are asked for again by
		 * the next sequential read, not left to be missed. */
		pthread_mutex_lock(&f->lock);
		if (next < end_chunk && f->prefetched_to == end_chunk)
			f->prefetched_to = next;
		pthread_mutex_unlock(&f->lock);
	}
}

/* The errno a failed read gives its reader (docs/ferry.md): ESTALE when the object changed
 * under the open file, EACCES and ENOENT when the store refused it or lost it, ENOMEM; EIO
 * for everything else (unreachable store, bad responses, retries spent). */
static int read_errno(ssize_t err)
{
	switch (err) {
	case -ESTALE:
	case -EACCES:
	case -ENOENT:
	case -ENOMEM:
		return (int)-err;
	default:
		return EIO;
	}
}

/* Reply path, measured on a warm chunk cache (512 MiB file, all chunks present, the cache
 * file in the page cache, a fresh mount each run so the kernel holds none of the FUSE file,
 * dd bs=1M, readahead 1 MiB, 2 shared cores, kernel 6.18), three runs each:
 *   pread from the cache file + copy, fuse_reply_buf:      4.1, 4.2, 4.3 GB/s
 *   fuse_reply_data splicing from the cache file's fd:     1.4, 1.8, 1.8 GB/s
 * (at the default 128 KiB readahead both were noisy, 1.4-3.3 GB/s). So the copy path is the
 * one used, as DESIGN.md's passthrough numbers predicted. The splice path is gone since
 * every byte read from the cache is checked against its checksum first (fetcher_read), which
 * a splice from the cache file would skip. */
static void read_reply(fuse_req_t req, struct ferryfs *fs, struct ferry_file *f, size_t size,
	off_t off)
{
	uint64_t fsize = f->obj.obj.size;
	ssize_t n;
	char *buf;

	if (off < 0 || (uint64_t)off >= fsize || !size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > fsize - (uint64_t)off)
		size = (size_t)(fsize - (uint64_t)off);
	detect_sequential(fs, f, (uint64_t)off, size);
	buf = read_buf_get(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = fetcher_read(fs->fetcher, f->co, buf, size, (uint64_t)off);
	if (n < 0) {
		atomic_fetch_add(&fs->read_errors, 1);
		log_warn("read of '/%s' at %lld: %s", f->obj.obj.path, (long long)off,
			strerror((int)-n));
		fuse_reply_err(req, read_errno(n));
		return;
	}
	atomic_fetch_add(&fs->read_bytes, (uint64_t)n);
	fuse_reply_buf(req, buf, (size_t)n);
}

static void ferry_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);
	struct timespec t0, t1;

	count_op(fs, FERRY_OP_READ);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	read_reply(req, fs, file_of(fi), size, off);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	metrics_observe_ns(&fs->read_latency, (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u +
						      (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec);
}

static void ferry_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ferryfs *fs = fs_of(req);

	count_op(fs, FERRY_OP_RELEASE);
	file_free(fs, file_of(fi));
	fuse_reply_err(req, 0);
}

static void ferry_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ferryfs *fs = fs_of(req);
	struct cache_stats cs;
	struct statvfs sv = { 0 };
	uint64_t limit;

	count_op(fs, FERRY_OP_STATFS);
	cache_get_stats(fs->cache, &cs);
	limit = cs.max_bytes;
	if (!limit && statvfs(fs->cache_dir, &sv) == 0)
		limit = (uint64_t)sv.f_blocks * sv.f_frsize;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = limit / 4096;
	sv.f_bfree = limit > cs.used_bytes ? (limit - cs.used_bytes) / 4096 : 0;
	sv.f_bavail = sv.f_bfree;
	sv.f_files = namespace_nr_nodes(fs->ns);
	sv.f_ffree = 0;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* ---- everything that would modify ---- */

static void refuse(fuse_req_t req)
{
	count_op(fs_of(req), FERRY_OP_REFUSED);
	fuse_reply_err(req, EROFS);
}

static void erofs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
	struct fuse_file_info *fi)
{
	refuse(req);
}

static void erofs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	dev_t rdev)
{
	refuse(req);
}

static void erofs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	refuse(req);
}

static void erofs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	refuse(req);
}

static void erofs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	refuse(req);
}

static void erofs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	const char *newname, unsigned int flags)
{
	refuse(req);
}

static void erofs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	refuse(req);
}

static void erofs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	struct fuse_file_info *fi)
{
	refuse(req);
}

static void erofs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	struct fuse_file_info *fi)
{
	refuse(req);
}

static void erofs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
	size_t size, int flags)
{
	refuse(req);
}

static void erofs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	refuse(req);
}

static void erofs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
	struct fuse_file_info *fi)
{
	refuse(req);
}

static void ferry_init(void *userdata, struct fuse_conn_info *conn)
{
	/* max_pages follows max_write in libfuse: 1 MiB requests both ways. */
	conn->max_write = 1u << 20;
	conn->max_read = 1u << 20; /* must equal the max_read mount option */
	conn->max_readahead = conn->max_readahead < (1u << 20) ? conn->max_readahead : 1u << 20;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

const struct fuse_lowlevel_ops ferry_ll_ops = {
	.init = ferry_init,
	.lookup = ferry_lookup,
	.forget = ferry_forget,
	.forget_multi = ferry_forget_multi,
	.getattr = ferry_getattr,
	.readlink = ferry_readlink,
	.opendir = ferry_opendir,
	.readdir = ferry_readdir,
	.readdirplus = ferry_readdirplus,
	.releasedir = ferry_releasedir,
	.open = ferry_open,
	.read = ferry_read,
	.release = ferry_release,
	.statfs = ferry_statfs,
	.getxattr = ferry_getxattr,
	.listxattr = ferry_listxattr,
	.ioctl = ferry_ioctl,
	.setattr = erofs_setattr,
	.mknod = erofs_mknod,
	.mkdir = erofs_mkdir,
	.unlink = erofs_unlink,
	.rmdir = erofs_unlink,
	.symlink = erofs_symlink,
	.rename = erofs_rename,
	.link = erofs_link,
	.write = erofs_write,
	.create = erofs_create,
	.setxattr = erofs_setxattr,
	.removexattr = erofs_removexattr,
	.fallocate = erofs_fallocate,
};
