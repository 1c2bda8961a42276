/* Fuzz target for the directory-page parser of fs/remote/autoindex.c (nginx autoindex, Apache
 * mod_autoindex pages, as a hostile server may send them): whatever the bytes, the parse ends
 * with 0, and every entry it hands out is a safe single name with a plausible type and size.
 * Input: the page. */
#include "config.h"

#include <errno.h>

#include "fs/log.h"
#include "fs/remote/autoindex.h"
#include "fs/remote/url.h"
#include "tests/fuzz/fuzz_util.h"

struct seen {
	unsigned long nr;
};

static int on_entry(void *arg, const struct autoindex_entry *e)
{
	struct seen *s = arg;
	size_t len;

	fuzz_check(e->name != NULL, "an entry has a name");
	len = strlen(e->name);
	fuzz_check(url_name_is_safe(e->name, len), "only safe names are handed out");
	fuzz_check(len >= 1 && len <= 255, "a name is 1..255 bytes");
	fuzz_check(strcmp(e->name, ".") && strcmp(e->name, ".."), "no . or ..");
	fuzz_check(e->type == REMOTE_FILE || e->type == REMOTE_DIR, "a file or a directory");
	if (e->type == REMOTE_DIR)
		fuzz_check(!e->size_exact && e->size == 0, "a directory has no size");
	if (!e->size_exact)
		fuzz_check(e->size == 0, "a size not given is 0");
	fuzz_check(e->mtime >= 0, "mtime is 0 or after 1970");
	s->nr++;
	return 0;
}

/* A callback that stops the parse at the first entry: its value must come back as is. */
static int stop_at_first(void *arg, const struct autoindex_entry *e)
{
	(void)e;
	++*(int *)arg;
	return 42;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *html = fuzz_copy(data, size, false);
	struct seen s = { 0 };
	int ret, calls = 0;

	if (!html)
		return 0;
	/* One warning per unsafe name is the parser's job; thousands a second are noise. */
	if (!getenv("FERRY_FUZZ_VERBOSE"))
		log_set_level(LOG_LEVEL_ERROR);
	ret = autoindex_parse(html, size, on_entry, &s);
	fuzz_check(ret == 0 || ret == -ENOMEM, "autoindex_parse returns 0 (or -ENOMEM)");
	fuzz_check(s.nr <= size / 4, "no more entries than <a href=x> links fit in the page");
	ret = autoindex_parse(html, size, stop_at_first, &calls);
	fuzz_check(calls <= 1, "a non-zero callback value stops the parse");
	fuzz_check(calls == 0 ? (ret == 0 || ret == -ENOMEM) : ret == 42,
		"the callback's value is returned");
	fuzz_check((calls == 1) == (s.nr > 0), "the same page gives the same first entry");
	free(html);
	return 0;
}
