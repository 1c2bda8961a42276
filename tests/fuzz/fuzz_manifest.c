/* Fuzz target for the .ferry-manifest parser of fs/manifest.c (a server's manifest, and the
 * format of the listings kept for offline mounts): a manifest parses to 0 or fails with
 * -EINVAL and a one-line reason naming the line; every entry it hands out has a safe relative
 * path; and what manifest_write_entry writes of an entry parses back to the same entry.
 * Input: the manifest text. */
#include "config.h"

#include <errno.h>

#include "fs/manifest.h"
#include "tests/fuzz/fuzz_util.h"

struct seen {
	FILE *out; /* the entries written again, for the round trip */
	struct remote_entry *entries;
	size_t nr, cap;
	bool compare; /* second pass: compare with entries[next] */
	size_t next;
};

static bool path_is_safe(const char *p)
{
	size_t len = strlen(p);

	if (len == 0 || len > 4096 || p[0] == '/' || p[len - 1] == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 0 || n > 255 || (n == 1 && p[0] == '.') ||
			(n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
		if (*p == '/')
			p++;
	}
	return true;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static int on_entry(void *arg, const struct remote_entry *e)
{
	struct seen *s = arg;

	fuzz_check(e->name && path_is_safe(e->name), "only safe relative paths are handed out");
	fuzz_check(e->type == REMOTE_FILE || e->type == REMOTE_DIR || e->type == REMOTE_SYMLINK,
		"a known type");
	fuzz_check(e->type != REMOTE_DIR || e->size == 0, "a directory has size 0");
	fuzz_check((e->type == REMOTE_SYMLINK) == (e->link_target != NULL),
		"a symlink, and only a symlink, has a target");
	fuzz_check(e->mtime.tv_nsec >= 0 && e->mtime.tv_nsec < 1000000000, "nanoseconds < 1e9");
	if (s->compare) {
		const struct remote_entry *o;

		fuzz_check(s->next < s->nr, "the rewritten manifest has no extra entry");
		o = &s->entries[s->next++];
		fuzz_check(o->type == e->type && o->size == e->size &&
				   o->mtime.tv_sec == e->mtime.tv_sec &&
				   o->mtime.tv_nsec == e->mtime.tv_nsec &&
				   str_eq(o->name, e->name) &&
				   str_eq(o->link_target, e->link_target),
			"an entry written and parsed again is the same entry");
		/* "" and "-" both read back as no ETag; anything else round-trips. */
		fuzz_check(str_eq(o->etag && *o->etag ? o->etag : NULL,
				   e->etag && *e->etag ? e->etag : NULL),
			"an ETag written and parsed again is the same ETag");
		return 0;
	}
	if (s->nr == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct remote_entry *n = realloc(s->entries, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->entries = n;
		s->cap = cap;
	}
	s->entries[s->nr] = (struct remote_entry){
		.name = strdup(e->name),
		.type = e->type,
		.size = e->size,
		.mtime = e->mtime,
		.etag = e->etag ? strdup(e->etag) : NULL,
		.link_target = e->link_target ? strdup(e->link_target) : NULL,
	};
	s->nr++;
	return manifest_write_entry(s->out, e->name, e);
}

/* The index of a manifest that parsed: it builds, or refuses an entry under a non-directory;
 * every path stats to its first line's entry, and each listed name is one of the manifest's
 * paths or a parent of one. */
static int on_listed(void *arg, const struct remote_entry *e)
{
	size_t *nr = arg;

	fuzz_check(e->name && *e->name && !strchr(e->name, '/'), "a listing hands out names");
	(*nr)++;
	return 0;
}

static void check_index(const char *buf, size_t size, const struct seen *s)
{
	struct manifest_index *m;
	char err[256] = "";
	size_t nr_listed = 0;
	int ret = manifest_index_new(&m, buf, size, err, sizeof(err));

	fuzz_check(ret == 0 || ret == -EINVAL || ret == -ENOMEM, "the index builds or is refused");
	if (ret) {
		fuzz_check(ret != -EINVAL || strstr(err, "not a directory"),
			"refused for a reason");
		return;
	}
	for (size_t i = 0; i < s->nr; i++) {
		const struct remote_entry *first = &s->entries[i];
		struct remote_entry e;

		for (size_t j = 0; j < i; j++)
			if (!strcmp(s->entries[j].name, first->name)) {
				first = &s->entries[j];
				break;
			}
		fuzz_check(manifest_index_stat(m, first->name, &e) == 0, "every path stats");
		fuzz_check(e.type == first->type && e.size == first->size &&
				   str_eq(e.link_target, first->link_target),
			"a path listed twice is its first line");
		if (e.type == REMOTE_DIR && first == &s->entries[i])
			fuzz_check(manifest_index_list(m, first->name, on_listed, &nr_listed) == 0,
				"a directory lists");
		remote_entry_done(&e);
	}
	fuzz_check(manifest_index_list(m, "", on_listed, &nr_listed) == 0, "the root lists");
	fuzz_check(nr_listed <= manifest_index_nr_entries(m), "no entry is listed twice");
	manifest_index_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_copy(data, size, false), *again = NULL, err[256] = "";
	size_t again_len = 0;
	struct seen s = { 0 };
	int ret;

	if (!buf)
		return 0;
	s.out = open_memstream(&again, &again_len);
	if (!s.out)
		goto out;
	fuzz_check(manifest_write_header(s.out) == 0, "the header is written");
	ret = manifest_parse(buf, size, on_entry, &s, err, sizeof(err));
	fuzz_check(ret == 0 || ret == -EINVAL || ret == -ENOMEM, "returns 0, -EINVAL or -ENOMEM");
	if (ret == -EINVAL) {
		fuzz_check_reason(err);
		fuzz_check(!strncmp(err, "manifest ", 9), "the reason says it is the manifest");
	}
	fclose(s.out);
	if (ret == 0) {
		s.compare = true;
		err[0] = '\0';
		ret = manifest_parse(again, again_len, on_entry, &s, err, sizeof(err));
		if (ret)
			fprintf(stderr, "rewritten manifest fails: %s\n", err);
		fuzz_check(ret == 0, "what manifest_write_entry writes parses");
		fuzz_check(s.next == s.nr, "the rewritten manifest has every entry");
		check_index(buf, size, &s);
	}
out:
	for (size_t i = 0; i < s.nr; i++)
		remote_entry_done(&s.entries[i]);
	free(s.entries);
	free(again);
	free(buf);
	return 0;
}
