/* train/: the ranks' agreement at start (agree.h): a table of named hashes compared with one
 * collective, and the identity of a dataset (its files' paths, sizes and versions). */
#include "config.h"

#include "train/agree.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "fs/ferry_ctl.h"
#include "loader/loader.h"
#include "train/comm.h"

uint64_t agree_hash(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void agree_init(struct agree *a)
{
	memset(a, 0, sizeof(*a));
}

void agree_add_hash(struct agree *a, const char *name, uint64_t hash, const char *value)
{
	if (a->nr_items == AGREE_MAX_ITEMS) {
		fprintf(stderr, "ferry train: agree: more than %d items (%s)\n", AGREE_MAX_ITEMS,
			name);
		abort();
	}
	struct agree_item *it = &a->items[a->nr_items++];
	snprintf(it->name, sizeof(it->name), "%s", name);
	it->hash = hash;
	snprintf(it->value, sizeof(it->value), "%s", value);
	/* a long path keeps its end, where paths differ most often */
	size_t len = strlen(value);
	if (len >= sizeof(it->value))
		snprintf(it->value, sizeof(it->value), "...%s",
			value + len - (sizeof(it->value) - 4));
}

void agree_add(struct agree *a, const char *name, const char *value)
{
	/* the length first: "ab"+"c" and "a"+"bc" never collide by construction */
	uint64_t len = strlen(value);
	uint64_t h = agree_hash(AGREE_HASH_INIT, &len, sizeof(len));
	agree_add_hash(a, name, agree_hash(h, value, len), value);
}

/* The version of one file: the ETag a ferry mount gives (the remote object's version), else
 * the modification time to the nanosecond. Two ranks reading one object through two mounts
 * see one ETag; two copies of a file made at different times do not look the same. */
static uint64_t file_version(uint64_t h, const char *path, const struct stat *sb)
{
	char etag[512];
	ssize_t n = getxattr(path, FERRY_XATTR_ETAG, etag, sizeof(etag));
	if (n > 0) {
		h = agree_hash(h, "etag", 4);
		return agree_hash(h, etag, (size_t)n);
	}
	int64_t t[2] = { (int64_t)sb->st_mtim.tv_sec, (int64_t)sb->st_mtim.tv_nsec };
	h = agree_hash(h, "mtime", 5);
	return agree_hash(h, t, sizeof(t));
}

/* Adds one file to the three running hashes; -errno with the file named in err. */
static int dataset_file(const char *path, uint64_t h[3], uint64_t *bytes, char *err, size_t errlen)
{
	struct stat sb;
	if (stat(path, &sb) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	uint64_t len = strlen(path), size = (uint64_t)sb.st_size;
	h[0] = agree_hash(h[0], &len, sizeof(len));
	h[0] = agree_hash(h[0], path, len);
	h[1] = agree_hash(h[1], &size, sizeof(size));
	h[2] = file_version(h[2], path, &sb);
	*bytes += size;
	return 0;
}

int agree_add_dataset(struct agree *a, const char *what, const struct loader *l, char *err,
	size_t errlen)
{
	uint64_t h[3] = { AGREE_HASH_INIT, AGREE_HASH_INIT, AGREE_HASH_INIT }, bytes = 0;
	const char *path, *idx;
	uint32_t i;

	for (i = 0; loader_shard_files(l, i, &path, &idx) == 0; i++) {
		int ret = dataset_file(path, h, &bytes, err, errlen);
		if (ret == 0 && idx)
			ret = dataset_file(idx, h, &bytes, err, errlen);
		if (ret < 0)
			return ret;
	}
	char name[64], value[96];
	snprintf(name, sizeof(name), "%s files", what);
	snprintf(value, sizeof(value), "%" PRIu32 " file(s)", i);
	agree_add_hash(a, name, h[0], value);
	snprintf(name, sizeof(name), "%s sizes", what);
	snprintf(value, sizeof(value), "%" PRIu64 " bytes in all", bytes);
	agree_add_hash(a, name, h[1], value);
	snprintf(name, sizeof(name), "%s file versions (mtime or ETag)", what);
	snprintf(value, sizeof(value), "version hash %016" PRIx64, h[2]);
	agree_add_hash(a, name, h[2], value);
	return 0;
}

int agree_compare(struct agree *a, struct comm *c)
{
	uint64_t v[AGREE_MAX_ITEMS + 1];
	unsigned char differs[AGREE_MAX_ITEMS + 1];
	unsigned n = a->nr_items;

	for (unsigned i = 0; i < n; i++)
		v[i] = a->items[i].hash;
	/* the table's length last: a rank built from other code would differ there */
	v[n] = n;
	if (comm_differing(c, v, n + 1, differs) < 0)
		return 0; /* cannot happen (n + 1 <= COMM_DIFFERING_MAX); never "agreed" */
	for (unsigned i = 0; i < n; i++)
		if (differs[i])
			return (int)i;
	return differs[n] ? 0 : -1;
}

void agree_format(const struct agree *a, int i, int rank, char *buf, size_t len)
{
	const struct agree_item *it = &a->items[i];
	snprintf(buf, len,
		"rank %d: ranks were given different %s (here: %s); every rank must "
		"run with the same settings and data",
		rank, it->name, it->value);
}
