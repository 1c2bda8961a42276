/* The chunk cache's files (see cache.h, cache_i.h): the on-disk format, making and opening an
 * object's files, cache_sync, and cache_open's load of the maps left by earlier runs. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "fs/cache.h"
#include "fs/cache_i.h"
#include "fs/io.h"
#include "fs/log.h"
#include "fs/remote/remote.h"

/*
 * On-disk format (format 2)
 * =========================
 * Under the cache directory D (one per source), owned by the daemon's user and mode 0700;
 * every folder the cache makes below it is 0700 and every file 0600, whatever the umask:
 *
 *   D/meta                 text, two lines: "ferry-cache 2" and "chunk_bytes N". Written once
 *                          when the cache is made (temporary file D/meta.PID, fsync, link). A
 *                          cache with another chunk size is refused, not converted. A format 1
 *                          cache ("ferry-cache 1") is emptied (its D/XX folders removed) and
 *                          made again as format 2, with one log line. The running process holds
 *                          flock(LOCK_EX) on it: one process per cache.
 *   D/XX/H.data            the object version's bytes, sparse: byte k of the object is byte
 *                          k of the file; chunks never fetched or evicted are holes. The file
 *                          is as long as the object. Made when the object is first opened.
 *   D/XX/H.map             which chunks of H.data are present, with their block checksums, see
 *                          below. Made at the object's first cache_sync (D/XX/H.map.tmp with
 *                          the header, fsync, rename), then updated in place.
 *   D/listings/            not the cache's (the daemon keeps its listings there).
 *
 * H is the 16-hex-digit XXH3-64 of the key: path, a NUL, version (ETag or mtime text), a
 * NUL, object size (8 bytes, little-endian); XX is its first two digits (256 folders).
 *
 * H.map: a 64-byte header, the path and version bytes, zero padding up to records_off (a
 * multiple of 512), then one 32-byte record per chunk, so no record straddles a sector; zero
 * padding up to sums_off (records_off + 32 * nr_chunks rounded up to 512), then one slot of
 * chunk_bytes / 65536 block sums (u64 each) per chunk: chunk i's slot is at
 * sums_off + 8 * i * (chunk_bytes / 65536).
 *   header: magic "FERRYMAP", u32 format (2), u32 chunk_bytes, u64 object_size,
 *           u64 nr_chunks, u64 key hash (= H), u32 path_bytes, u32 version_bytes,
 *           u32 records_off, u32 zero, u64 XXH3-64 of the first 56 header bytes followed
 *           by the path and version bytes.
 *   record: u64 XXH3-64 of the chunk's block sums (the first nr_blocks u64 of its slot),
 *           u64 last-use stamp (a cache-wide logical clock), u32 flags (bit 0: present),
 *           u32 chunk length, u64 XXH3-64 of the first 24 record bytes seeded with
 *           (index XOR H): a torn or misplaced record reads as absent, and so does a record
 *           whose sum does not match its slot (a torn slot). An all-zero record is absent:
 *           the map is sparse, and loading reads only its written extents (SEEK_DATA).
 *   block sum: XXH3-64 (seed 0) of one 64 KiB block of the object, offset-aligned (the
 *           object's last block may be short); a chunk of length L has ceil(L / 65536).
 * All integers are in host byte order (the cache is local to the machine).
 *
 * Write order: chunk bytes go to H.data first; cache_sync() fdatasyncs H.data and only
 * then writes the slots and records of the present chunks and fdatasyncs H.map, so a record
 * says present only when the bytes under it are durable. Eviction writes the absent record
 * first, then punches the hole. Every read of H.data is checked block by block against the
 * sums: a block that does not verify (a crash left a present record over bytes that changed
 * or were punched, the disk failed, someone wrote the file) makes its chunk absent (record
 * cleared, hole punched) and it is fetched again. Bytes in H.data under absent records
 * (fills never synced) are punched out when the cache is opened, so disk use matches the
 * maps. Maps and data files that do not parse, or are not owned by the daemon's user, are
 * removed when the cache is opened, never served; so are leftover H.map.tmp files.
 */

/* ---- small helpers ---- */

static int errf(char *errbuf, size_t errlen, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int errf(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errlen) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static uint64_t record_check(const struct map_record *r, uint64_t idx, uint64_t key_hash)
{
	return XXH3_64bits_withSeed(r, offsetof(struct map_record, check), idx ^ key_hash);
}

uint64_t cache_key_hash_of(const char *path, const char *version, uint64_t size)
{
	XXH3_state_t *s = XXH3_createState();
	uint64_t h;

	if (!s)
		return 0;
	XXH3_64bits_reset(s);
	XXH3_64bits_update(s, path, strlen(path) + 1);
	XXH3_64bits_update(s, version, strlen(version) + 1);
	XXH3_64bits_update(s, &size, sizeof(size));
	h = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return h;
}

static uint64_t header_sum_of(const struct map_header *h, const char *path, const char *ver)
{
	XXH3_state_t *s = XXH3_createState();
	uint64_t sum;

	if (!s)
		return 0;
	XXH3_64bits_reset(s);
	XXH3_64bits_update(s, h, offsetof(struct map_header, header_sum));
	XXH3_64bits_update(s, path, h->path_bytes);
	XXH3_64bits_update(s, ver, h->version_bytes);
	sum = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	return sum;
}

void cache_punch(int fd, uint64_t off, uint64_t len)
{
	if (fd >= 0 && len)
		(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			(off_t)len);
}

/* ---- an object's files ---- */

/* Checks that path is a folder of ours and private (making it so when it is ours). */
static int dir_check_private(struct cache *c, const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != c->euid)
		return -EPERM;
	if ((sb.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
		return -errno;
	return 0;
}

/* Makes D/XX for an object's files: 0700 whatever the umask, and ours. */
static int obj_make_dir(struct cache_object *o)
{
	struct cache *c = o->cache;
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/%02x", c->dir, (unsigned)(o->key_hash >> 56));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return dir_check_private(c, dir);
}

/* Creates a private file (0600 whatever the umask), replacing what was there. */
static int create_private(const char *path, int flags)
{
	int fd = open(path, flags | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0) {
		int err = -errno;

		close(fd);
		unlink(path);
		return err;
	}
	return fd;
}

/* Creates a new object's data file: empty, sparse, as long as the object. Under io_lock. */
static int obj_create_data(struct cache_object *o)
{
	int rc = obj_make_dir(o), fd;

	if (rc < 0)
		return rc;
	fd = create_private(o->data_path, O_RDWR);
	if (fd < 0)
		return fd;
	if (ftruncate(fd, (off_t)o->size) < 0) {
		rc = -errno;
		close(fd);
		unlink(o->data_path);
		return rc;
	}
	o->data_fd = fd;
	o->data_exists = true;
	return 0;
}

/* Creates a new object's map atomically: the header in H.map.tmp, fsync, rename; all records
 * absent (the rest of the map is a hole). Under io_lock. */
static int obj_create_map(struct cache_object *o)
{
	struct cache *c = o->cache;
	struct map_header h = { .format = MAP_FORMAT };
	size_t pl = strlen(o->path), vl = strlen(o->version);
	char *buf = NULL, tmp[PATH_MAX + 8];
	ssize_t n;
	int fd, rc;

	snprintf(tmp, sizeof(tmp), "%s.tmp", o->map_path);
	memcpy(h.magic, MAP_MAGIC, sizeof(h.magic));
	h.chunk_bytes = c->chunk_bytes;
	h.object_size = o->size;
	h.nr_chunks = o->nr_chunks;
	h.key_hash = o->key_hash;
	h.path_bytes = (uint32_t)pl;
	h.version_bytes = (uint32_t)vl;
	h.records_off = o->records_off;
	h.header_sum = header_sum_of(&h, o->path, o->version);
	buf = calloc(1, o->records_off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), o->path, pl);
	memcpy(buf + sizeof(h) + pl, o->version, vl);
	fd = create_private(tmp, O_RDWR);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	n = c->io->pwrite(fd, buf, o->records_off, 0);
	free(buf);
	rc = n < 0 ? (int)n : c->io->fdatasync(fd);
	if (rc == 0 && rename(tmp, o->map_path) < 0)
		rc = -errno;
	if (rc < 0) {
		close(fd);
		unlink(tmp);
		return rc;
	}
	o->map_fd = fd;
	o->map_exists = true;
	o->dir_synced = false; /* a new name in D/XX */
	return 0;
}

/* Opens the data file (creating it for a new object when create is set, unless the cache is
 * degraded). Under io_lock. */
int cache_obj_open_data_locked(struct cache_object *o, bool create)
{
	if (o->data_fd >= 0)
		return 0;
	if (!o->data_exists) {
		if (!create)
			return -ENOENT;
		return cache_degraded(o->cache) ? -EROFS : obj_create_data(o);
	}
	o->data_fd = open(o->data_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	return o->data_fd < 0 ? -errno : 0;
}

/* Makes sure the data descriptor is open, creating the file for a new object. The caller
 * holds a reference. */
int cache_obj_open_data(struct cache_object *o)
{
	int rc;

	pthread_mutex_lock(&o->io_lock);
	rc = cache_obj_open_data_locked(o, true);
	pthread_mutex_unlock(&o->io_lock);
	return rc;
}

/* Opens the map (creating it when create is set and it does not exist yet). Under io_lock. */
int cache_obj_open_map(struct cache_object *o, bool create)
{
	if (o->map_fd >= 0)
		return 0;
	if (!o->map_exists)
		return create ? obj_create_map(o) : -ENOENT;
	o->map_fd = open(o->map_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	return o->map_fd < 0 ? -errno : 0;
}

/* ---- sync ---- */

/* Under c->lock: fills one dirty page's records (and, for present durable chunks, their
 * slots of block sums) into recs and slots; has[k] tells which slots to write. Returns true
 * when the page holds present chunks not yet durable (it stays dirty). */
static bool page_records(struct cache *c, struct chunk_page *p, struct map_record *recs,
	uint64_t *slots, bool *has)
{
	struct cache_object *o = p->obj;
	uint32_t bpc = c->blocks_per_chunk;
	bool redirty = false;

	for (unsigned k = 0; k < cache_page_nr_chunks(o, p); k++) {
		struct chunk *ch = &p->ch[k];
		uint64_t idx = p->first + k, len = chunk_len(o, idx);
		struct map_record *r = &recs[k];

		has[k] = false;
		memset(r, 0, sizeof(*r));
		if (ch->flags & CH_SYNCING) {
			/* a fill after the snapshot clears SYNCING: those bytes are not durable */
			ch->flags = (uint8_t)((ch->flags & ~CH_SYNCING) | CH_DURABLE);
		}
		if (ch->state == CH_PRESENT && (ch->flags & CH_DURABLE)) {
			uint64_t *slot = slots + (uint64_t)k * bpc;

			memcpy(slot, chunk_sums(c, ch), blocks_of(len) * sizeof(*slot));
			memset(slot + blocks_of(len), 0, (bpc - blocks_of(len)) * sizeof(*slot));
			r->sum = XXH3_64bits(slot, blocks_of(len) * sizeof(*slot));
			r->stamp = ch->stamp;
			r->flags = REC_PRESENT;
			r->len = (uint32_t)len;
			r->check = record_check(r, idx, o->key_hash);
			has[k] = true;
		} else if (ch->state == CH_PRESENT) {
			redirty = true;
		}
	}
	return redirty;
}

/* Writes one page's slots (runs of present chunks only: a sparse map stays sparse), then its
 * records. Under io_lock. */
static int page_write(struct cache *c, struct cache_object *o, struct chunk_page *p,
	const struct map_record *recs, const uint64_t *slots, const bool *has)
{
	uint64_t slot_bytes = (uint64_t)c->blocks_per_chunk * sizeof(uint64_t);
	unsigned nk = cache_page_nr_chunks(o, p), k = 0, j;
	ssize_t n;

	while (k < nk) {
		if (!has[k]) {
			k++;
			continue;
		}
		for (j = k; j < nk && has[j]; j++)
			;
		n = c->io->pwrite(o->map_fd, (const char *)slots + k * slot_bytes,
			(j - k) * slot_bytes, o->sums_off + (p->first + k) * slot_bytes);
		if (n < 0)
			return (int)n;
		k = j;
	}
	n = c->io->pwrite(o->map_fd, recs, nk * sizeof(*recs),
		o->records_off + p->first * MAP_RECORD_BYTES);
	return n < 0 ? (int)n : 0;
}

/* Makes one object's filled chunks durable, then records them as present. */
static int obj_sync(struct cache *c, struct cache_object *o)
{
	struct chunk_page **dirty = NULL;
	struct map_record *recs = NULL;
	uint64_t *slots = NULL;
	bool has[CHUNKS_PER_PAGE];
	bool need_datasync = false, any_present = false;
	size_t nr = 0, i;
	int rc = 0;

	pthread_mutex_lock(&o->io_lock);
	pthread_mutex_lock(&c->lock);
	for (struct chunk_page *p = o->pages; p; p = p->next)
		nr += p->dirty;
	if (nr) {
		dirty = malloc(nr * sizeof(*dirty));
		if (!dirty) {
			cache_obj_mark_dirty(c,
				o); /* the pages stay dirty: the next sync takes them */
			pthread_mutex_unlock(&c->lock);
			rc = -ENOMEM;
			goto out;
		}
	}
	nr = 0;
	for (struct chunk_page *p = o->pages; p; p = p->next) {
		if (!p->dirty)
			continue;
		p->dirty = false;
		dirty[nr++] = p;
		for (unsigned k = 0; k < cache_page_nr_chunks(o, p); k++) {
			struct chunk *ch = &p->ch[k];

			if (ch->state == CH_PRESENT && !(ch->flags & CH_DURABLE)) {
				ch->flags |= CH_SYNCING;
				need_datasync = true;
			}
			any_present |= ch->state == CH_PRESENT;
		}
	}
	pthread_mutex_unlock(&c->lock);
	/* Nothing stored, or only absences to record in a map not made yet: no map to
	 * write (an emptied object's map would only take room). */
	if (!nr || !o->data_exists || (!o->map_exists && !any_present))
		goto out;
	recs = calloc(CHUNKS_PER_PAGE, sizeof(*recs));
	slots = calloc((size_t)CHUNKS_PER_PAGE * c->blocks_per_chunk, sizeof(*slots));
	if (!recs || !slots) {
		rc = -ENOMEM;
		goto restore;
	}
	rc = cache_obj_open_data_locked(o, false);
	if (rc == 0 && need_datasync)
		rc = c->io->fdatasync(o->data_fd);
	if (rc == 0)
		rc = cache_obj_open_map(o, true);
	if (rc < 0)
		goto disk;
	for (i = 0; i < nr; i++) {
		bool redirty;

		pthread_mutex_lock(&c->lock);
		redirty = page_records(c, dirty[i], recs, slots, has);
		if (redirty)
			cache_mark_dirty(c, &dirty[i]->ch[0]);
		pthread_mutex_unlock(&c->lock);
		rc = page_write(c, o, dirty[i], recs, slots, has);
		if (rc < 0)
			goto disk;
	}
	rc = c->io->fdatasync(o->map_fd);
	if (rc < 0)
		goto disk;
	if (!o->dir_synced) {
		/* the new files' names must survive a crash too */
		char dir[PATH_MAX];
		int dfd;

		snprintf(dir, sizeof(dir), "%s/%02x", c->dir, (unsigned)(o->key_hash >> 56));
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd) == 0)
				o->dir_synced = true;
			close(dfd);
		}
	}
	goto out;
disk:
	/* A full or failing volume: what was written is torn-safe (a record whose slot or
	 * data did not make it reads as absent), and the next sync writes it all again. The
	 * caller counts the error. */
restore:
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < nr; i++) {
		for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++)
			dirty[i]->ch[k].flags &= (uint8_t)~CH_SYNCING;
		cache_mark_dirty(c, &dirty[i]->ch[0]);
	}
	pthread_mutex_unlock(&c->lock);
out:
	pthread_mutex_unlock(&o->io_lock);
	free(dirty);
	free(recs);
	free(slots);
	return rc;
}

/* The objects of one cache_sync, shared by its threads. */
struct sync_batch {
	struct cache *c;
	struct cache_object **objs;
	size_t nr;
	atomic_size_t next; /* the next object to take */
	pthread_mutex_t lock;
	int rc; /* the first error, and the map it was about */
	char what[PATH_MAX];
};

static void *sync_worker(void *arg)
{
	struct sync_batch *b = arg;
	struct cache *c = b->c;
	size_t i;

	while ((i = atomic_fetch_add(&b->next, 1)) < b->nr) {
		struct cache_object *o = b->objs[i];
		int r = obj_sync(c, o);

		if ((r == -ENOSPC || r == -EDQUOT) && cache_make_room(c, c->chunk_bytes)) {
			r = obj_sync(c, o); /* the map's few new blocks fit now */
			if (r == 0)
				cache_disk_full_recovered(c);
		}
		if (r < 0) {
			pthread_mutex_lock(&b->lock);
			if (b->rc == 0) {
				b->rc = r;
				snprintf(b->what, sizeof(b->what), "%s", o->map_path);
			}
			pthread_mutex_unlock(&b->lock);
		}
		cache_obj_put(o);
	}
	return NULL;
}

/* Objects synced at once. Each object costs up to four waits on the volume (its data, its new
 * map, the map's records, its directory): one after another, 4000 small files took 16 s to
 * sync at unmount against 2.3 s to read them. Syncs in flight together share the file
 * system's journal commits, so threads cut that to what the volume needs. */
#define SYNC_THREADS    16
#define SYNC_PER_THREAD 8 /* fewer objects than this per thread: fewer threads */

int cache_sync(struct cache *c)
{
	struct sync_batch b = { .c = c, .lock = PTHREAD_MUTEX_INITIALIZER };
	pthread_t threads[SYNC_THREADS];
	size_t nr_threads = 0, want;
	struct cache_object *o;

	/* The dirty objects are moved into an array of our own under the lock: their
	 * dirty_next links belong to c->dirty, which cache_mark_dirty relinks (under the lock) as
	 * soon as on_dirty is false, so walking them after unlocking would follow another
	 * list and put references we never took. */
	pthread_mutex_lock(&c->lock);
	for (o = c->dirty; o; o = o->dirty_next)
		b.nr++;
	if (b.nr) {
		b.objs = malloc(b.nr * sizeof(*b.objs));
		if (!b.objs) {
			pthread_mutex_unlock(&c->lock);
			return -ENOMEM; /* the list stays: the next sync takes it */
		}
	}
	b.nr = 0;
	while ((o = c->dirty)) {
		c->dirty = o->dirty_next;
		o->dirty_next = NULL;
		o->on_dirty = false;
		cache_obj_ref_locked(o);
		b.objs[b.nr++] = o;
	}
	pthread_mutex_unlock(&c->lock);
	want = b.nr / SYNC_PER_THREAD;
	want = want > SYNC_THREADS ? SYNC_THREADS : want;
	/* this thread is one of them; a thread that cannot start leaves its share to the rest */
	while (nr_threads + 1 < want &&
		pthread_create(&threads[nr_threads], NULL, sync_worker, &b) == 0)
		nr_threads++;
	sync_worker(&b);
	for (size_t i = 0; i < nr_threads; i++)
		pthread_join(threads[i], NULL);
	free(b.objs);
	pthread_mutex_destroy(&b.lock);
	/* One error per sync, however many maps it could not write: one full volume is not
	 * DEGRADE_AFTER failures at once. */
	if (b.rc < 0 && b.rc != -ENOMEM)
		cache_disk_error(c, b.rc, "syncing", b.what);
	return b.rc;
}

/* ---- open, load, free ---- */

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Removes every object file of the cache (the D/XX folders), leaving D/meta and what is not
 * the cache's (D/listings). */
static void remove_objects(struct cache *c)
{
	for (unsigned b = 0; b < 256; b++) {
		char sub[PATH_MAX], path[PATH_MAX + 300];
		struct dirent *de;
		DIR *d;

		snprintf(sub, sizeof(sub), "%s/%02x", c->dir, b);
		d = opendir(sub);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
			unlink(path);
		}
		closedir(d);
		rmdir(sub);
	}
}

/* Writes D/meta for this cache through a private temporary file; with replace, over an
 * existing one (rename), else only where none is (link: another process's wins). */
static int meta_write(struct cache *c, const char *path, bool replace, char *errbuf, size_t errlen)
{
	char tmp[PATH_MAX], text[128];
	int fd, len, err;

	snprintf(tmp, sizeof(tmp), "%s/" META_NAME ".%d", c->dir, (int)getpid());
	fd = create_private(tmp, O_WRONLY);
	if (fd < 0)
		return errf(errbuf, errlen, fd, "cannot write %s: %s", tmp, strerror(-fd));
	len = snprintf(text, sizeof(text), META_MAGIC "\nchunk_bytes %u\n", c->chunk_bytes);
	errno = 0;
	if (write(fd, text, (size_t)len) != len || fsync(fd) < 0) {
		err = errno ? errno : EIO;
		close(fd);
		unlink(tmp);
		return errf(errbuf, errlen, -err, "cannot write %s: %s", tmp, strerror(err));
	}
	close(fd);
	if (replace ? rename(tmp, path) < 0 : (link(tmp, path) < 0 && errno != EEXIST)) {
		err = errno;
		unlink(tmp);
		return errf(errbuf, errlen, -err, "cannot create %s: %s", path, strerror(err));
	}
	if (!replace)
		unlink(tmp);
	return 0;
}

/* Opens D/meta (ours, and locked) into *fdp; its text into text. */
static int meta_lock(struct cache *c, const char *path, int *fdp, char *text, size_t size,
	char *errbuf, size_t errlen)
{
	struct stat sb;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), err;
	bool locked;

	*fdp = -1;
	if (fd < 0)
		return errf(errbuf, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_uid != c->euid) {
		close(fd);
		return errf(errbuf, errlen, -EPERM,
			"%s is not a regular file owned by this user (uid %u); not using cache %s",
			path, (unsigned)c->euid, c->dir);
	}
	/* umount returns once the kernel lets go, before the daemon has written its maps and
	 * exited: an immediate remount waits for it (flock has no timed form; this is
	 * contention only, and bounded). */
	for (unsigned waited = 0;; waited += 50) {
		locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
		if (locked || errno != EWOULDBLOCK || waited >= c->lock_wait_ms)
			break;
		usleep(50 * 1000);
	}
	if (!locked) {
		err = errno;
		close(fd);
		if (err == EWOULDBLOCK)
			return errf(errbuf, errlen, -EBUSY,
				"cache %s is in use by another ferry process", c->dir);
		return errf(errbuf, errlen, -err, "cannot lock %s: %s", path, strerror(err));
	}
	if ((sb.st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	n = pread(fd, text, size - 1, 0);
	if (n < 0) {
		err = errno;
		close(fd);
		return errf(errbuf, errlen, -err, "cannot read %s: %s", path, strerror(err));
	}
	text[n] = '\0';
	*fdp = fd;
	return 0;
}

/* Removes D/meta.PID files left by a process that stopped while making the meta file. */
static void remove_meta_temps(struct cache *c)
{
	struct dirent *de;
	DIR *d = opendir(c->dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (strncmp(de->d_name, META_NAME ".", strlen(META_NAME) + 1) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
		unlink(path);
	}
	closedir(d);
}

/* Reads or writes D/meta and takes the cache's lock. A format 1 cache is emptied and made
 * again: its maps have no block sums, so none of its bytes could be checked on a read. */
static int meta_open(struct cache *c, char *errbuf, size_t errlen)
{
	char path[PATH_MAX], text[128];
	unsigned long long cb;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/" META_NAME, c->dir);
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		rc = meta_write(c, path, false, errbuf, errlen);
		if (rc < 0)
			return rc;
	}
	rc = meta_lock(c, path, &fd, text, sizeof(text), errbuf, errlen);
	if (rc < 0)
		return rc;
	remove_meta_temps(c);
	if (strncmp(text, META_MAGIC_V1 "\n", strlen(META_MAGIC_V1) + 1) == 0) {
		int old = fd;

		log_warn("cache: %s is a format 1 cache (no block checksums); discarding its "
			 "contents and starting it again as format 2",
			c->dir);
		remove_objects(c);
		rc = meta_write(c, path, true, errbuf, errlen);
		if (rc == 0)
			rc = meta_lock(c, path, &fd, text, sizeof(text), errbuf, errlen);
		close(old);
		if (rc < 0)
			return rc;
	}
	if (sscanf(text, META_MAGIC "\nchunk_bytes %llu\n", &cb) != 1 ||
		strncmp(text, META_MAGIC "\n", strlen(META_MAGIC) + 1) != 0) {
		close(fd);
		return errf(errbuf, errlen, -EINVAL,
			"%s is not a ferry cache (format 2) metadata file", path);
	}
	if (cb != c->chunk_bytes) {
		close(fd);
		return errf(errbuf, errlen, -EINVAL,
			"cache %s was made with chunk size %llu, not %u; use that chunk size or "
			"another cache directory",
			c->dir, cb, c->chunk_bytes);
	}
	c->meta_fd = fd;
	return 0;
}

static void unlink_pair(const char *map_path, const char *data_path)
{
	if (map_path)
		unlink(map_path);
	if (data_path)
		unlink(data_path);
}

/* Punches out bytes of the data file that no present record covers (fills that were
 * never synced before the process stopped). Walks the file's data extents only. */
static void obj_reclaim_orphans(struct cache *c, struct cache_object *o, int fd)
{
	off_t pos = 0;

	for (;;) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0)
			return; /* ENXIO: no more data */
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return;
		for (uint64_t i = (uint64_t)data >> c->chunk_shift;
			i < o->nr_chunks && (i << c->chunk_shift) < (uint64_t)hole; i++) {
			struct chunk *ch = cache_chunk_find(o, i);

			if (ch && ch->state == CH_PRESENT)
				continue;
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    (off_t)(i << c->chunk_shift), (off_t)chunk_len(o, i)) < 0)
				return;
		}
		pos = hole;
	}
}

/* One record read from a map: present when it checks, its slot of sums matches its sum, and
 * memory allows. Single-threaded (cache_open). */
static void load_record(struct cache *c, struct cache_object *o, int mfd, uint64_t idx,
	const struct map_record *r)
{
	uint64_t len = chunk_len(o, idx), one = 0, *sums;
	uint32_t nb = blocks_of(len);
	struct chunk *ch;
	ssize_t n;

	if (!(r->flags & REC_PRESENT) || r->check != record_check(r, idx, o->key_hash) ||
		r->len != len)
		return;
	sums = nb > 1 || c->blocks_per_chunk > 1 ? malloc(nb * sizeof(*sums)) : &one;
	if (!sums)
		return;
	n = c->io->pread(mfd, sums, nb * sizeof(*sums),
		o->sums_off + idx * c->blocks_per_chunk * sizeof(*sums));
	ch = n == (ssize_t)(nb * sizeof(*sums)) && XXH3_64bits(sums, nb * sizeof(*sums)) == r->sum
		     ? cache_chunk_get(o, idx)
		     : NULL;
	if (!ch) {
		if (sums != &one)
			free(sums);
		return;
	}
	ch->state = CH_PRESENT;
	ch->flags = CH_DURABLE;
	if (c->blocks_per_chunk > 1)
		ch->sums.many = sums;
	else
		ch->sums.one = one;
	ch->stamp = r->stamp;
	o->cached_bytes += len;
}

/* Reads the records of a map: only its data extents (SEEK_DATA), so a map of an object that
 * claims petabytes but holds a few chunks costs a few reads. */
static int load_records(struct cache *c, struct cache_object *o, int mfd)
{
	uint64_t start = o->records_off, end = start + o->nr_chunks * MAP_RECORD_BYTES, pos;
	struct map_record *recs = malloc(LOAD_RECORDS * sizeof(*recs));

	if (!recs)
		return -ENOMEM;
	for (pos = start; pos < end;) {
		off_t data = lseek(mfd, (off_t)pos, SEEK_DATA), hole;
		uint64_t i;

		if (data < 0 && errno == ENXIO)
			break; /* no more data: the rest is absent */
		if (data < 0)
			data = (off_t)pos; /* no SEEK_DATA here: read it all */
		if ((uint64_t)data >= end)
			break;
		hole = lseek(mfd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > end)
			hole = (off_t)end;
		for (i = ((uint64_t)data - start) / MAP_RECORD_BYTES;
			start + i * MAP_RECORD_BYTES < (uint64_t)hole;) {
			uint64_t want = min_u64(LOAD_RECORDS, o->nr_chunks - i);
			ssize_t n = c->io->pread(mfd, recs, want * sizeof(*recs),
				start + i * MAP_RECORD_BYTES);

			if (n < (ssize_t)sizeof(*recs))
				goto out; /* a short map (torn extension): the rest is absent */
			for (uint64_t k = 0; k < (uint64_t)n / sizeof(*recs); k++)
				load_record(c, o, mfd, i + k, &recs[k]);
			i += (uint64_t)n / sizeof(*recs);
		}
		pos = start + i * MAP_RECORD_BYTES;
	}
out:
	free(recs);
	return 0;
}

/* Opens one of an object's files as found on disk: a regular file owned by this user, made
 * private if it was not. -errno and a reason. */
static int open_own(struct cache *c, const char *path, int flags, struct stat *sb, const char **why)
{
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		*why = errno == ELOOP ? "a symbolic link" : "cannot open";
		return -errno;
	}
	if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
		*why = "not a regular file";
		close(fd);
		return -EINVAL;
	}
	if (sb->st_uid != c->euid) {
		*why = "not owned by this user";
		close(fd);
		return -EPERM;
	}
	if ((sb->st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	return fd;
}

/* Loads one map file left by an earlier run; a map (or its data file) that does not parse
 * or is not ours is removed with its data file (the cache is only a cache). Returns the
 * object, not yet in any table. */
static struct cache_object *map_load(struct cache *c, const char *map_path)
{
	struct map_header h;
	struct cache_object *o = NULL;
	char *path = NULL, *version = NULL, *data_path = NULL;
	const char *why = NULL;
	struct stat sb;
	int mfd = -1, dfd = -1;
	ssize_t n;

	if (asprintf(&data_path, "%.*s.data", (int)(strlen(map_path) - 4), map_path) < 0)
		return NULL;
	mfd = open_own(c, map_path, O_RDONLY, &sb, &why);
	if (mfd < 0)
		goto bad;
	n = c->io->pread(mfd, &h, sizeof(h), 0);
	if (n != (ssize_t)sizeof(h) || memcmp(h.magic, MAP_MAGIC, 8) != 0 ||
		h.format != MAP_FORMAT) {
		why = "not a format 2 map";
		goto bad;
	}
	if (h.chunk_bytes != c->chunk_bytes || h.path_bytes > MAX_PATH_BYTES ||
		h.version_bytes > MAX_VERSION_BYTES || h.object_size > MAX_OBJECT_BYTES ||
		h.nr_chunks != (h.object_size + c->chunk_bytes - 1) >> c->chunk_shift ||
		h.records_off < MAP_HEADER_BYTES + h.path_bytes + h.version_bytes || h.zero) {
		why = "header inconsistent";
		goto bad;
	}
	path = calloc(1, h.path_bytes + 1);
	version = calloc(1, h.version_bytes + 1);
	if (!path || !version)
		goto bad;
	if (c->io->pread(mfd, path, h.path_bytes, MAP_HEADER_BYTES) != (ssize_t)h.path_bytes ||
		c->io->pread(mfd, version, h.version_bytes, MAP_HEADER_BYTES + h.path_bytes) !=
			(ssize_t)h.version_bytes ||
		header_sum_of(&h, path, version) != h.header_sum || strlen(path) != h.path_bytes ||
		strlen(version) != h.version_bytes ||
		cache_key_hash_of(path, version, h.object_size) != h.key_hash) {
		why = "header checksum mismatch";
		goto bad;
	}
	o = cache_obj_new(c, path, version, h.object_size, h.key_hash);
	if (!o)
		goto bad;
	if (strcmp(o->map_path, map_path) != 0 || o->records_off != h.records_off) {
		why = "misplaced";
		goto bad;
	}
	dfd = open_own(c, data_path, O_RDWR, &sb, &why);
	if (dfd < 0) {
		if (why && !strcmp(why, "cannot open"))
			why = "data file missing";
		goto bad;
	}
	if ((uint64_t)sb.st_size != o->size) {
		why = "data file has the wrong size";
		goto bad;
	}
	if (load_records(c, o, mfd) < 0)
		goto bad;
	obj_reclaim_orphans(c, o, dfd);
	o->data_exists = o->map_exists = true;
	o->dir_synced = true;
	goto out;
bad:
	if (why)
		log_warn("cache: removing %s: %s", map_path, why);
	unlink_pair(map_path, data_path);
	cache_obj_destroy(o);
	o = NULL;
out:
	if (mfd >= 0)
		close(mfd);
	if (dfd >= 0)
		close(dfd);
	free(path);
	free(version);
	free(data_path);
	return o;
}

static uint64_t obj_max_stamp(const struct cache_object *o)
{
	uint64_t m = 0;

	for (const struct chunk_page *p = o->pages; p; p = p->next)
		for (unsigned k = 0; k < cache_page_nr_chunks(o, p); k++)
			if (p->ch[k].state == CH_PRESENT && p->ch[k].stamp > m)
				m = p->ch[k].stamp;
	return m;
}

static int cmp_stamp(const void *a, const void *b)
{
	const struct chunk *x = *(struct chunk *const *)a, *y = *(struct chunk *const *)b;

	return x->stamp < y->stamp ? -1 : x->stamp > y->stamp;
}

/* Adds a loaded object: the newer of two versions of one path wins, the other is
 * deleted. Single-threaded (cache_open). */
static void load_add(struct cache *c, struct cache_object *o)
{
	struct cache_object **slot = cache_table_slot(c, o->path), *old = *slot;

	if (old) {
		struct cache_object *loser = obj_max_stamp(old) >= obj_max_stamp(o) ? o : old;

		log_info("cache: two versions of %s; removing %s", o->path, loser->map_path);
		unlink_pair(loser->map_path, loser->data_path);
		if (loser == o) {
			cache_obj_destroy(o);
			return;
		}
		cache_table_remove(c, old);
		if (old->all_prev)
			old->all_prev->all_next = old->all_next;
		else
			c->all = old->all_next;
		if (old->all_next)
			old->all_next->all_prev = old->all_prev;
		c->st.nr_objects--;
		cache_obj_destroy(old);
	}
	cache_table_insert(c, o);
	cache_all_insert(c, o);
}

static bool is_hex16(const char *s)
{
	for (int i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Loads the maps of one D/XX folder. */
static void load_dir(struct cache *c, const char *sub)
{
	struct dirent *de;
	DIR *d = opendir(sub);

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char path[PATH_MAX + 300];
		struct cache_object *o;

		if (len < 16 + 4 || !is_hex16(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
		if (!strcmp(de->d_name + 16, ".map.tmp")) {
			unlink(path); /* a map being made when the process stopped */
			continue;
		}
		if (!strcmp(de->d_name + 16, ".data")) {
			/* a data file whose map is gone (removed mid-way, or never synced) */
			char map[PATH_MAX + 300];

			snprintf(map, sizeof(map), "%.*s.map", (int)(strlen(path) - 5), path);
			if (access(map, F_OK) < 0 && errno == ENOENT)
				unlink(path);
			continue;
		}
		if (strcmp(de->d_name + 16, ".map") != 0)
			continue;
		o = map_load(c, path);
		if (o && !o->cached_bytes) {
			/* Every chunk was evicted (or never synced): nothing to keep, and
			 * maps kept for emptied objects would make every mount slower. */
			unlink_pair(o->map_path, o->data_path);
			cache_obj_destroy(o);
			continue;
		}
		if (o)
			load_add(c, o);
	}
	closedir(d);
}

/* Loads every map under D/XX/ (removing those of objects with no chunk left), then rebuilds
 * the LRU order from the stamps. */
static int cache_load(struct cache *c)
{
	struct chunk **present = NULL;
	size_t nr_present = 0, cap = 0;

	for (unsigned b = 0; b < 256; b++) {
		char sub[PATH_MAX];
		int rc;

		snprintf(sub, sizeof(sub), "%s/%02x", c->dir, b);
		rc = dir_check_private(c, sub);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			/* Only root can make one in our private D: nothing in it is used. */
			log_warn("cache: ignoring %s: not a private folder of this user", sub);
			continue;
		}
		load_dir(c, sub);
	}
	for (struct cache_object *o = c->all; o; o = o->all_next) {
		for (struct chunk_page *p = o->pages; p; p = p->next) {
			for (unsigned k = 0; k < cache_page_nr_chunks(o, p); k++) {
				struct chunk *ch = &p->ch[k];

				if (ch->state != CH_PRESENT)
					continue;
				if (nr_present == cap) {
					size_t ncap = cap ? cap * 2 : 1024;
					struct chunk **np = realloc(present, ncap * sizeof(*np));

					if (!np) {
						free(present);
						return -ENOMEM;
					}
					present = np;
					cap = ncap;
				}
				present[nr_present++] = ch;
				c->st.used_bytes += chunk_len(o, p->first + k);
				c->st.nr_chunks++;
				if (ch->stamp > c->clock)
					c->clock = ch->stamp;
			}
		}
	}
	if (nr_present)
		qsort(present, nr_present, sizeof(*present), cmp_stamp);
	for (size_t i = 0; i < nr_present; i++)
		cache_lru_append(c, present[i]);
	free(present);
	return 0;
}

int cache_open(struct cache **out, const struct cache_config *cfg, char *errbuf, size_t errlen)
{
	struct cache *c;
	struct chunk *victims;
	struct stat sb;
	int rc;

	*out = NULL;
	if (!cfg || !cfg->dir || !cfg->dir[0])
		return errf(errbuf, errlen, -EINVAL, "no cache directory given");
	if (cfg->chunk_bytes < (64u << 10) || cfg->chunk_bytes > (64u << 20) ||
		(cfg->chunk_bytes & (cfg->chunk_bytes - 1)))
		return errf(errbuf, errlen, -EINVAL,
			"chunk size %u is not a power of two from 64 KiB to 64 MiB",
			cfg->chunk_bytes);
	if (strlen(cfg->dir) > PATH_MAX - 64)
		return errf(errbuf, errlen, -ENAMETOOLONG, "cache directory name too long");
	c = calloc(1, sizeof(*c));
	if (!c)
		return errf(errbuf, errlen, -ENOMEM, "out of memory");
	c->meta_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->dead_cond, NULL);
	c->lru.lru_next = c->lru.lru_prev = &c->lru;
	c->chunk_bytes = cfg->chunk_bytes;
	c->chunk_shift = (uint32_t)__builtin_ctz(cfg->chunk_bytes);
	c->blocks_per_chunk = cfg->chunk_bytes >> BLOCK_SHIFT;
	c->max_bytes = cfg->max_bytes;
	c->st.max_bytes = cfg->max_bytes;
	c->lock_wait_ms = cfg->lock_wait_ms;
	c->io = cfg->io ? cfg->io : io_default();
	c->euid = geteuid();
	c->nr_buckets = 64;
	c->table = calloc(c->nr_buckets, sizeof(*c->table));
	c->dir = strdup(cfg->dir);
	if (!c->table || !c->dir) {
		rc = errf(errbuf, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = mkdir_p(c->dir);
	if (rc < 0) {
		rc = errf(errbuf, errlen, rc, "cannot create cache directory %s: %s", c->dir,
			strerror(-rc));
		goto fail;
	}
	/* Private to this user: another user's folder is refused, ours is made 0700. */
	if (lstat(c->dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		rc = errf(errbuf, errlen, -ENOTDIR, "cache directory %s is not a directory",
			c->dir);
		goto fail;
	}
	if (sb.st_uid != c->euid) {
		rc = errf(errbuf, errlen, -EPERM,
			"cache directory %s is owned by uid %u, not by this user (uid %u); "
			"refusing to use it",
			c->dir, (unsigned)sb.st_uid, (unsigned)c->euid);
		goto fail;
	}
	if ((sb.st_mode & 07777) != 0700 && chmod(c->dir, 0700) < 0) {
		rc = errf(errbuf, errlen, -errno, "cannot make cache directory %s private: %s",
			c->dir, strerror(errno));
		goto fail;
	}
	rc = meta_open(c, errbuf, errlen);
	if (rc < 0)
		goto fail;
	rc = cache_load(c);
	if (rc < 0) {
		rc = errf(errbuf, errlen, rc, "cannot load cache %s: %s", c->dir, strerror(-rc));
		goto fail;
	}
	/* A smaller limit than last time: shrink now. */
	victims = cache_pick_victims(c, 0);
	cache_evict_victims(c, victims);
	*out = c;
	return 0;
fail:
	cache_free(c);
	return rc;
}

void cache_free(struct cache *c)
{
	struct cache_object *o, *next;

	if (!c)
		return;
	/* Deliberately no sync: records are written only by cache_sync (the daemon calls it at
	 * unmount), so a crash and a free leave the same state behind. */
	for (size_t i = 0; i < c->nr_buckets && c->table; i++)
		c->table[i] = NULL;
	for (o = c->all; o; o = next) {
		next = o->all_next;
		for (struct chunk_page *p = o->pages; p; p = p->next) {
			for (unsigned k = 0; k < CHUNKS_PER_PAGE; k++) {
				struct flight *f = p->ch[k].flight;

				if (!f)
					continue;
				/* a caller still fetching at free: a bug on their side; do not
				 * leave waiters asleep on freed memory */
				p->ch[k].flight = NULL;
				f->done = true;
				f->result = -ESHUTDOWN;
				pthread_cond_broadcast(&f->cond);
				cache_flight_unref(f);
			}
		}
		cache_obj_destroy(o);
	}
	if (c->meta_fd >= 0)
		close(c->meta_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->dead_cond);
	free(c->table);
	free(c->dir);
	free(c);
}
