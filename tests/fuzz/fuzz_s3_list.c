/* Fuzz target for the S3 XML parsers of fs/remote/s3_list.c (ListObjectsV2 pages and Error
 * documents, with expat): whatever the reply, a parse returns 0, -EBADMSG or -EREMOTEIO with a
 * one-line reason, frees what it refused, and a page it accepts is within the limits s3_list.h
 * promises. Input: the reply body. */
#include "config.h"

#include <errno.h>

#include "fs/remote/s3_list.h"
#include "tests/fuzz/fuzz_util.h"

static void check_page(const struct s3_list_page *pg)
{
	fuzz_check(pg->nr_objects + pg->nr_prefixes <= S3_LIST_MAX_ENTRIES, "entries bounded");
	fuzz_check(pg->nr_objects == 0 || pg->objects, "objects allocated");
	fuzz_check(pg->nr_prefixes == 0 || pg->prefixes, "prefixes allocated");
	fuzz_check(pg->key_count >= -1 && pg->key_count <= S3_LIST_MAX_ENTRIES, "KeyCount bounded");
	fuzz_check(!pg->is_truncated || (pg->next_token && pg->next_token[0]),
		"a truncated page has a continuation token");
	for (size_t i = 0; i < pg->nr_objects; i++) {
		const struct s3_list_object *o = &pg->objects[i];

		fuzz_check(o->key != NULL, "an object has a key");
		fuzz_check(o->key_bytes <= S3_LIST_MAX_TEXT_BYTES, "a key is bounded");
		fuzz_check(o->key[o->key_bytes] == '\0', "key_bytes counts the key");
		fuzz_check(o->size <= (UINT64_C(1) << 50), "a size is plausible");
		fuzz_check(o->mtime.tv_nsec >= 0 && o->mtime.tv_nsec < 1000000000, "nanoseconds");
	}
	for (size_t i = 0; i < pg->nr_prefixes; i++) {
		const struct s3_list_prefix *p = &pg->prefixes[i];

		fuzz_check(p->prefix != NULL, "a prefix is there");
		fuzz_check(p->prefix_bytes <= S3_LIST_MAX_TEXT_BYTES, "a prefix is bounded");
		fuzz_check(p->prefix[p->prefix_bytes] == '\0', "prefix_bytes counts the prefix");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *xml = fuzz_copy(data, size, false), err[256] = "";
	struct s3_list_page pg;
	struct s3_error_doc doc;
	int ret;

	if (!xml)
		return 0;
	ret = s3_list_parse(xml, size, &pg, err, sizeof(err));
	fuzz_check(ret == 0 || ret == -EBADMSG || ret == -EREMOTEIO || ret == -ENOMEM,
		"s3_list_parse returns 0, -EBADMSG or -EREMOTEIO");
	if (ret) {
		fuzz_check_reason(err);
		fuzz_check(pg.nr_objects == 0 && pg.nr_prefixes == 0 && !pg.objects &&
				   !pg.prefixes && !pg.next_token,
			"a refused page holds nothing");
	} else {
		check_page(&pg);
	}
	s3_list_page_done(&pg);
	s3_list_page_done(&pg); /* done twice is harmless: the page is emptied */

	ret = s3_error_parse(xml, size, &doc);
	fuzz_check(ret == 0 || ret == -EBADMSG || ret == -ENOMEM, "s3_error_parse: 0 or -EBADMSG");
	fuzz_check(memchr(doc.code, '\0', sizeof(doc.code)) &&
			   memchr(doc.message, '\0', sizeof(doc.message)) &&
			   memchr(doc.region, '\0', sizeof(doc.region)),
		"the error texts are terminated");
	if (ret == 0) {
		/* Any code and status classify to some error, and map to a net_error. */
		enum s3_error e = s3_error_classify(doc.code, 400 + (long)(size % 200));

		fuzz_check(e != S3_ERR_NONE, "an error document is an error");
		fuzz_check(s3_error_to_net(e, 400) != NET_OK, "an error is not NET_OK");
	}
	free(xml);
	return 0;
}
