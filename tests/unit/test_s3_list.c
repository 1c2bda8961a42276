/* The ListObjectsV2 and Error document parsers: replies shaped like AWS's and radosgw's, and
 * hostile XML (entities, deep nesting, absurd values, missing fields) refused cleanly. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/s3_list.h"

static int parse(const char *xml, struct s3_list_page *pg, char *err)
{
	return s3_list_parse(xml, strlen(xml), pg, err, 256);
}

static const char aws_page[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>bucket</Name><Prefix>data/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
	"<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>"
	"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</"
	"NextContinuationToken>"
	"<Contents><Key>data/a.bin</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>"
	"<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>"
	"<StorageClass>STANDARD</StorageClass><Owner><ID>x</ID></Owner></Contents>"
	"<Contents><Key>data/b &amp; c.bin</Key><Size>0</Size>"
	"<ETag>\"d41d8cd98f00b204e9800998ecf8427e-2\"</ETag></Contents>"
	"<CommonPrefixes><Prefix>data/sub/</Prefix></CommonPrefixes>"
	"</ListBucketResult>";

Test(s3_list, parses_an_aws_shaped_page)
{
	struct s3_list_page pg;
	char err[256] = "";

	cr_assert_eq(parse(aws_page, &pg, err), 0, "%s", err);
	cr_assert_eq(pg.nr_objects, 2);
	cr_assert_str_eq(pg.objects[0].key, "data/a.bin");
	cr_assert_eq(pg.objects[0].size, 434234);
	cr_assert_eq(pg.objects[0].mtime.tv_sec, 1255369830);
	cr_assert_str_eq(pg.objects[0].etag, "\"fba9dede5f27731c9771645a39863328\"");
	cr_assert_str_eq(pg.objects[1].key, "data/b & c.bin");
	cr_assert_eq(pg.objects[1].size, 0);
	cr_assert_eq(pg.objects[1].mtime.tv_sec, 0);
	cr_assert_eq(pg.nr_prefixes, 1);
	cr_assert_str_eq(pg.prefixes[0].prefix, "data/sub/");
	cr_assert(pg.is_truncated);
	cr_assert_str_eq(pg.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
	cr_assert_eq(pg.key_count, 3);
	s3_list_page_done(&pg);
}

Test(s3_list, undoes_url_encoding_including_nul_bytes)
{
	struct s3_list_page pg;
	char err[256] = "";
	const char *xml = "<ListBucketResult><EncodingType>url</EncodingType>"
			  "<IsTruncated>false</IsTruncated>"
			  "<Contents><Key>a%20b%2Fc+d%2B%C3%A9%00x</Key><Size>1</Size></Contents>"
			  "<CommonPrefixes><Prefix>p%2Fq%2F</Prefix></CommonPrefixes>"
			  "</ListBucketResult>";

	cr_assert_eq(parse(xml, &pg, err), 0, "%s", err);
	cr_assert_eq(pg.objects[0].key_bytes, 12);
	cr_assert_eq(memcmp(pg.objects[0].key, "a b/c d+\xc3\xa9\0x", 12), 0);
	cr_assert_str_eq(pg.prefixes[0].prefix, "p/q/");
	cr_assert(!pg.is_truncated);
	cr_assert_eq(pg.key_count, -1);
	s3_list_page_done(&pg);
}

Test(s3_list, an_error_document_is_told_apart_and_classified)
{
	struct s3_list_page pg;
	struct s3_error_doc doc;
	char err[256] = "";
	const char *xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error>"
			  "<Code>SignatureDoesNotMatch</Code><Message>The request signature we "
			  "calculated does not match</Message><RequestId>1</RequestId></Error>";

	cr_assert_eq(parse(xml, &pg, err), -EREMOTEIO);
	cr_assert(strstr(err, "SignatureDoesNotMatch"), "%s", err);
	cr_assert_eq(s3_error_parse(xml, strlen(xml), &doc), 0);
	cr_assert_str_eq(doc.code, "SignatureDoesNotMatch");
	cr_assert_eq(s3_error_classify(doc.code, 403), S3_ERR_BAD_SIGNATURE);
	cr_assert_eq(s3_error_classify("InvalidAccessKeyId", 403), S3_ERR_BAD_KEY_ID);
	cr_assert_eq(s3_error_classify("NoSuchBucket", 404), S3_ERR_NO_SUCH_BUCKET);
	cr_assert_eq(s3_error_classify(NULL, 404), S3_ERR_NO_SUCH_KEY);
	cr_assert_eq(s3_error_classify("SlowDown", 503), S3_ERR_SLOW_DOWN);
	cr_assert_eq(s3_error_parse(aws_page, strlen(aws_page), &doc), -EBADMSG);
}

/* The retry policy and errno are net.h's: what each S3 answer must mean there. */
static bool retried(const char *code, long status)
{
	return net_error_is_retryable(s3_error_to_net(s3_error_classify(code, status), status));
}

static int errno_of(const char *code, long status)
{
	return net_error_to_errno(s3_error_to_net(s3_error_classify(code, status), status));
}

Test(s3_list, slow_down_internal_error_and_request_timeout_are_retried)
{
	cr_assert(retried("SlowDown", 503));
	cr_assert(retried(NULL, 503));
	cr_assert(retried("InternalError", 500));
	cr_assert(retried(NULL, 500));
	cr_assert(retried("ServiceUnavailable", 503));
	cr_assert(retried("RequestTimeout", 400), "S3 sends RequestTimeout as a 400");
	cr_assert(retried(NULL, 502));
}

Test(s3_list, access_denied_no_such_bucket_and_changed_objects_are_final)
{
	static const struct {
		const char *code;
		long status;
		int err;
	} final[] = {
		{ "AccessDenied", 403, -EACCES },
		{ "SignatureDoesNotMatch", 403, -EACCES },
		{ "InvalidAccessKeyId", 403, -EACCES },
		{ "ExpiredToken", 400, -EACCES },
		{ NULL, 403, -EACCES },
		{ "NoSuchBucket", 404, -ENOENT },
		{ "NoSuchKey", 404, -ENOENT },
		{ NULL, 404, -ENOENT },
		{ "PreconditionFailed", 412, -ESTALE },
		{ NULL, 412, -ESTALE },
		{ "InvalidRange", 416, -ESTALE },
		{ "PermanentRedirect", 301, -EIO },
		{ "InvalidArgument", 400, -EIO },
	};

	for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++) {
		cr_assert(!retried(final[i].code, final[i].status), "%s %ld is retried",
			final[i].code ? final[i].code : "-", final[i].status);
		cr_assert_eq(errno_of(final[i].code, final[i].status), final[i].err, "%s %ld: %d",
			final[i].code ? final[i].code : "-", final[i].status,
			errno_of(final[i].code, final[i].status));
	}
	cr_assert_eq(s3_error_to_net(S3_ERR_NONE, 200), NET_OK);
}

static void refused(const char *xml, const char *why)
{
	struct s3_list_page pg;
	char err[256] = "";
	int r = s3_list_parse(xml, strlen(xml), &pg, err, sizeof(err));

	cr_assert_eq(r, -EBADMSG, "%s: got %d", why, r);
	cr_assert(err[0], "%s: no reason given", why);
	cr_assert_null(pg.objects);
	cr_assert_null(pg.next_token);
}

Test(s3_list, refuses_entity_expansion_and_external_entities)
{
	refused("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
		"<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
		"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>"
		"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>&lol3;</Key>"
		"<Size>1</Size></Contents></ListBucketResult>",
		"billion laughs");
	refused("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
		"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>&e;</Key>"
		"<Size>1</Size></Contents></ListBucketResult>",
		"external entity");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>&undefined;"
		"</Key><Size>1</Size></Contents></ListBucketResult>",
		"undefined entity");
}

Test(s3_list, refuses_deep_nesting)
{
	size_t n = 100000;
	char *xml = malloc(n * 7 + 200), *p = xml;

	p += sprintf(p, "<ListBucketResult><IsTruncated>false</IsTruncated>");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "<a>");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "</a>");
	sprintf(p, "</ListBucketResult>");
	refused(xml, "deep nesting");
	free(xml);
}

Test(s3_list, refuses_huge_and_absurd_values)
{
	size_t n = 1 << 20;
	char *xml = malloc(n + 300);
	cr_assert_not_null(xml);
	int len = sprintf(xml, "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>");
	memset(xml + len, 'k', n);
	strcpy(xml + len + n, "</Key><Size>1</Size></Contents></ListBucketResult>");
	refused(xml, "a 1 MiB key");
	free(xml);
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
		"<Size>99999999999999999999999</Size></Contents></ListBucketResult>",
		"a size over 64 bits");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
		"<Size>9223372036854775807</Size></Contents></ListBucketResult>",
		"a size of 2^63");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
		"<Size>-1</Size></Contents></ListBucketResult>",
		"a negative size");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>1e9</KeyCount>"
		"</ListBucketResult>",
		"a KeyCount that is not a count");
	refused("<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
		"IsTruncated neither true nor false");
}

Test(s3_list, refuses_too_many_entries_in_one_page)
{
	size_t n = S3_LIST_MAX_ENTRIES + 1;
	const char *entry = "<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes>";
	char *xml = malloc(n * strlen(entry) + 200), *p = xml;

	p += sprintf(p, "<ListBucketResult><IsTruncated>false</IsTruncated>");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s", entry);
	sprintf(p, "</ListBucketResult>");
	refused(xml, "too many entries");
	free(xml);
}

Test(s3_list, refuses_missing_fields_and_broken_documents)
{
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Size>1</Size>"
		"</Contents></ListBucketResult>",
		"no Key");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
		"</Contents></ListBucketResult>",
		"no Size");
	refused("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
		"truncated without a token");
	refused("<ListBucketResult></ListBucketResult>", "no IsTruncated");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
		"<Key>j</Key><Size>1</Size></Contents></ListBucketResult>",
		"two Keys in one entry");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k<b/></Key>"
		"<Size>1</Size></Contents></ListBucketResult>",
		"markup inside a key");
	refused("<ListAllMyBucketsResult/>", "another document");
	refused("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k",
		"a truncated document");
	refused("", "an empty body");
	refused("<html><body>502 Bad Gateway</body></html>", "an HTML error page");
	refused("\xff\xfe<", "bytes that are not XML");
	refused("<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false"
		"</IsTruncated><Contents><Key>bad%zz</Key><Size>1</Size></Contents>"
		"</ListBucketResult>",
		"a bad escape in a url-encoded key");
}

/* Found by fuzz_s3_list (corpus/s3_list/error_code_with_cr.xml): a CR or LF in an Error's
 * Code or Message, or in a refused key, split the one-line error ferry prints. */
Test(s3_list, quotes_server_text_on_one_line)
{
	struct s3_list_page pg;
	struct s3_error_doc doc;
	char err[256] = "";
	const char *error_doc = "<Error><Code>Access&#13;Denied</Code>"
				"<Message>line one\nline two\tend</Message></Error>";
	const char *bad_key = "<ListBucketResult><IsTruncated>false</IsTruncated>"
			      "<Contents><Key>a\nforged: line</Key></Contents></ListBucketResult>";

	cr_assert_eq(parse(error_doc, &pg, err), -EREMOTEIO);
	cr_expect_null(strpbrk(err, "\r\n\t"), "%s", err);
	cr_expect(strstr(err, "line one?line two?end"), "%s", err);
	cr_assert_eq(s3_error_parse(error_doc, strlen(error_doc), &doc), 0);
	cr_expect_str_eq(doc.code, "Access?Denied");
	cr_expect_null(strpbrk(doc.message, "\r\n\t"), "%s", doc.message);
	err[0] = '\0';
	cr_assert_eq(parse(bad_key, &pg, err), -EBADMSG);
	cr_expect_null(strpbrk(err, "\r\n"), "%s", err);
	cr_expect(strstr(err, "a?forged: line"), "%s", err);
}
