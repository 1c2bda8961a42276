/* Fuzz target for the chunk cache's map files (fs/cache.c), through the public API only, so
 * that it holds for any map format: at start it makes a real cache holding one object (every
 * chunk filled with known bytes, synced), and remembers its files. Each input then rebuilds
 * that cache with the map file replaced by bytes derived from the input, opens it and reads
 * every chunk. Whatever the map holds: cache_open succeeds (a map that does not parse is
 * discarded), and every byte a read returns is the object's byte, else the read fails.
 * Input: byte 0 picks how the map is made (mod 4):
 *   0: the rest of the input is the map;
 *   1: the real map with bytes flipped: (u16 offset, u8 xor) triples;
 *   2: the real map cut at (u16 of bytes 1-2) mod its size, then the rest appended;
 *   3: the real map with the rest of the input written over it at (u16 of bytes 1-2). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/cache.h"
#include "fs/io.h"
#include "fs/log.h"
#include "fs/remote/remote.h"
#include "tests/fuzz/fuzz_util.h"

#define CHUNK_BYTES (64u << 10)
#define OBJ_PATH    "data/shard-0001.bin"
#define OBJ_SIZE    (3 * (uint64_t)CHUNK_BYTES + 1234)
#define OBJ_VERSION "\"5d41402abc4b2a76b9719d911017c592\""
#define MAX_FILES   16

static const struct remote_object obj = { .path = OBJ_PATH, .size = OBJ_SIZE, .etag = OBJ_VERSION };

struct file {
	char *rel; /* relative to the cache directory */
	uint8_t *bytes;
	size_t len;
	mode_t mode;
};

static char base[64], tmpl_dir[96], work_dir[96];
static struct file files[MAX_FILES];
static int nr_files, map_idx = -1;
static uint8_t object[OBJ_SIZE]; /* the object's bytes */

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	fuzz_check(fd >= 0 && fstat(fd, &st) == 0, "a template file opens");
	b = malloc((size_t)st.st_size + 1);
	fuzz_check(b && read(fd, b, (size_t)st.st_size) == st.st_size, "a template file reads");
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	struct file *f;

	if (type != FTW_F)
		return 0;
	fuzz_check(nr_files < MAX_FILES, "a cache of one object has few files");
	f = &files[nr_files++];
	f->rel = strdup(path + strlen(tmpl_dir) + 1);
	f->mode = st->st_mode & 07777;
	f->bytes = slurp(path, &f->len);
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_base(void)
{
	rm_tree(base);
}

/* Makes the template cache and finds its map: the one file in a subfolder that is not the
 * object's data file (or, among several, the one ending in ".map"). */
static void setup_once(void)
{
	struct cache_config cfg = { .dir = tmpl_dir,
		.chunk_bytes = CHUNK_BYTES,
		.io = &io_sync_backend };
	struct cache_object *o;
	struct cache *c;
	char err[256] = "", *data_rel;
	int nr_candidates = 0;

	if (base[0])
		return;
	atexit(rm_base);
	if (!getenv("FERRY_FUZZ_VERBOSE"))
		log_set_level(LOG_LEVEL_ERROR);
	/* tmpfs where there is one: each input rewrites the cache's files, and on a disk that
	 * costs ~20 ms an input (100 inputs a second instead of thousands). */
	snprintf(base, sizeof(base), "%s/ferry_fuzz_cache.XXXXXX",
		access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fuzz_check(mkdtemp(base) != NULL, "a temp dir");
	snprintf(tmpl_dir, sizeof(tmpl_dir), "%s/t", base);
	snprintf(work_dir, sizeof(work_dir), "%s/w", base);
	for (uint64_t i = 0; i < OBJ_SIZE; i++)
		object[i] = (uint8_t)(i * 7 + (i >> 16) * 13 + 1);

	fuzz_check(cache_open(&c, &cfg, err, sizeof(err)) == 0, "the template cache opens");
	fuzz_check(cache_object_open(c, &obj, OBJ_VERSION, &o) == 0, "the template object opens");
	for (uint64_t i = 0; i < cache_object_nr_chunks(o); i++) {
		uint64_t off = i * CHUNK_BYTES;
		size_t len = OBJ_SIZE - off < CHUNK_BYTES ? (size_t)(OBJ_SIZE - off) : CHUNK_BYTES;

		fuzz_check(cache_chunk_acquire(o, i, true) == CACHE_FETCH, "a new chunk is absent");
		fuzz_check(cache_chunk_fill(o, i, object + off, len) == 0, "a chunk is filled");
		cache_chunk_release(o, i);
	}
	fuzz_check(cache_sync(c) == 0, "the template cache syncs");
	data_rel = strdup(cache_object_data_path(o) + strlen(tmpl_dir) + 1);
	cache_object_unref(o);
	cache_free(c);

	nftw(tmpl_dir, collect, 16, FTW_PHYS);
	for (int i = 0; i < nr_files; i++) {
		if (!strchr(files[i].rel, '/') || !strcmp(files[i].rel, data_rel))
			continue;
		nr_candidates++;
		map_idx = i;
	}
	/* Should a format keep more files per object, the map is still the one named so. */
	for (int i = 0; nr_candidates > 1 && i < nr_files; i++) {
		size_t n = strlen(files[i].rel);

		if (n > 4 && !strcmp(files[i].rel + n - 4, ".map") && strchr(files[i].rel, '/')) {
			nr_candidates = 1;
			map_idx = i;
		}
	}
	if (nr_candidates != 1) {
		for (int i = 0; i < nr_files; i++)
			fprintf(stderr, "template cache file: %s\n", files[i].rel);
		fuzz_check(false, "the template cache has exactly one map file");
	}
	free(data_rel);
}

static void put(const char *rel, const uint8_t *bytes, size_t len, mode_t mode)
{
	char path[256], *slash;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", work_dir, rel);
	for (slash = strchr(path + strlen(work_dir) + 1, '/'); slash;
		slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0700);
		*slash = '/';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	fuzz_check(fd >= 0, "a work file opens");
	fuzz_check(len == 0 || write(fd, bytes, len) == (ssize_t)len, "a work file is written");
	close(fd);
}

/* The map this input asks for (malloc'd). */
static uint8_t *make_map(const uint8_t *data, size_t size, size_t *len)
{
	const struct file *m = &files[map_idx];
	size_t at = size >= 3 ? (size_t)(data[1] | data[2] << 8) : 0, n;
	uint8_t *b;

	switch (data[0] % 4) {
	case 0:
		*len = size - 1;
		return (uint8_t *)fuzz_copy(data + 1, size - 1, false);
	case 1:
		b = (uint8_t *)fuzz_copy(m->bytes, m->len, false);
		for (size_t i = 1; b && m->len && i + 3 <= size; i += 3)
			b[(size_t)(data[i] | data[i + 1] << 8) % m->len] ^= data[i + 2];
		*len = m->len;
		return b;
	case 2:
		at %= m->len + 1;
		n = size > 3 ? size - 3 : 0;
		b = malloc(at + n + 1);
		if (b) {
			memcpy(b, m->bytes, at);
			memcpy(b + at, data + 3, n);
		}
		*len = at + n;
		return b;
	default:
		n = size > 3 ? size - 3 : 0;
		at %= m->len + 1;
		*len = at + n > m->len ? at + n : m->len;
		b = calloc(1, *len + 1);
		if (b) {
			memcpy(b, m->bytes, m->len);
			memcpy(b + at, data + 3, n);
		}
		return b;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cache_config cfg = { .dir = work_dir,
		.chunk_bytes = CHUNK_BYTES,
		.io = &io_sync_backend };
	static uint8_t buf[CHUNK_BYTES];
	struct cache_object *o;
	struct cache_stats st;
	struct cache *c;
	char err[256] = "";
	uint8_t *map;
	size_t map_len;
	int ret;

	if (size < 1)
		return 0;
	setup_once();
	map = make_map(data, size, &map_len);
	if (!map)
		return 0;
	rm_tree(work_dir);
	mkdir(work_dir, 0700);
	for (int i = 0; i < nr_files; i++) {
		if (i == map_idx)
			put(files[i].rel, map, map_len, files[i].mode);
		else
			put(files[i].rel, files[i].bytes, files[i].len, files[i].mode);
	}
	free(map);

	ret = cache_open(&c, &cfg, err, sizeof(err));
	if (ret)
		fprintf(stderr, "cache_open: %s\n", err);
	fuzz_check(ret == 0, "a cache opens whatever its map holds");
	ret = cache_object_open(c, &obj, OBJ_VERSION, &o);
	fuzz_check(ret == 0, "the object opens whatever its map held");
	fuzz_check(cache_object_size(o) == OBJ_SIZE, "the object keeps its size");
	for (uint64_t i = 0; i < cache_object_nr_chunks(o); i++) {
		uint64_t off = i * CHUNK_BYTES;
		size_t len = OBJ_SIZE - off < CHUNK_BYTES ? (size_t)(OBJ_SIZE - off) : CHUNK_BYTES;
		ssize_t n;

		ret = cache_chunk_acquire(o, i, false);
		if (ret == CACHE_FETCH) {
			cache_chunk_fail(o, i, -EIO);
			continue;
		}
		fuzz_check(ret == CACHE_HIT || ret < 0, "acquire: hit, fetch or -errno");
		if (ret < 0)
			continue;
		memset(buf, 0xa5, len);
		n = cache_object_read(o, buf, len, off);
		fuzz_check(n < 0 || n == (ssize_t)len,
			"a read of a pinned chunk is whole or fails");
		if (n > 0 && memcmp(buf, object + off, len)) {
			fprintf(stderr, "chunk %llu: wrong bytes served\n", (unsigned long long)i);
			fuzz_check(false, "a read never returns a wrong byte");
		}
		cache_chunk_release(o, i);
	}
	cache_get_stats(c, &st);
	fuzz_check(st.nr_chunks <= cache_object_nr_chunks(o), "no more chunks than the object has");
	fuzz_check(st.used_bytes <= OBJ_SIZE, "no more bytes than the object has");
	cache_object_unref(o);
	cache_free(c);
	return 0;
}
