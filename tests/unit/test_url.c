/* Tests of URL parsing, percent-decoding and encoding (fs/remote/url.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/url.h"

Test(url, parses_scheme_host_port_and_path)
{
	struct url u;
	char err[256];

	cr_assert_eq(url_parse(&u, "http://127.0.0.1:8080/data/set%20a/", err, sizeof(err)), 0);
	cr_assert_str_eq(u.scheme, "http");
	cr_assert_str_eq(u.host, "127.0.0.1");
	cr_assert_eq(u.port, 8080);
	cr_assert_str_eq(u.path, "/data/set%20a/");
	cr_assert_null(u.query);
	url_done(&u);
	cr_assert_eq(url_parse(&u, "HTTPS://example.org", err, sizeof(err)), 0);
	cr_assert_str_eq(u.scheme, "https");
	cr_assert_eq(u.port, 443);
	cr_assert_str_eq(u.path, "/");
	url_done(&u);
	cr_assert_eq(url_parse(&u, "http://[::1]:81/x?sig=1#frag", err, sizeof(err)), 0);
	cr_assert_str_eq(u.host, "[::1]");
	cr_assert_eq(u.port, 81);
	cr_assert_str_eq(u.path, "/x");
	cr_assert_str_eq(u.query, "sig=1");
	url_done(&u);
}

Test(url, refuses_what_is_not_an_http_url_with_a_reason)
{
	static const char *bad[] = { "ftp://h/", "s3://b/k", "/local/dir", "http://", "http://:80/",
		"http://h:0/", "http://h:65536/", "http://h:8a/", "http://u:p@h/", "http://h/a b",
		"http://[::1/" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct url u;
		char err[256] = "";

		cr_expect_eq(url_parse(&u, bad[i], err, sizeof(err)), -EINVAL, "%s", bad[i]);
		cr_expect_neq(err[0], '\0', "no reason for %s", bad[i]);
		cr_expect_null(strchr(err, '\n'));
	}
}

Test(url, decodes_percent_escapes_in_both_cases)
{
	char *s;

	cr_assert_eq(url_decode("a%20b%2fc%C3%BC+%25", 19, &s), 0);
	cr_assert_str_eq(s, "a b/c\xc3\xbc+%");
	free(s);
	cr_assert_eq(url_decode("", 0, &s), 0);
	cr_assert_str_eq(s, "");
	free(s);
}

Test(url, refuses_bad_escapes_and_nul)
{
	static const char *bad[] = { "%", "%2", "a%zz", "%00", "%G0", "x%0" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *s = NULL;

		cr_expect_eq(url_decode(bad[i], strlen(bad[i]), &s), -EINVAL, "%s", bad[i]);
		cr_expect_null(s);
	}
}

Test(url, encodes_paths_so_that_decoding_gives_them_back)
{
	char name[256], *enc, *dec;

	for (int i = 1; i < 256; i++)
		name[i - 1] = (char)i;
	name[255] = '\0';
	enc = url_encode_path(name);
	for (const char *p = enc; *p; p++)
		cr_assert(
			strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%/",
				*p),
			"unexpected '%c' in %s", *p, enc);
	cr_assert_eq(url_decode(enc, strlen(enc), &dec), 0);
	cr_assert_str_eq(dec, name);
	free(enc);
	free(dec);
	enc = url_encode_component("a/b c");
	cr_assert_str_eq(enc, "a%2Fb%20c");
	free(enc);
}

Test(url, joins_a_directory_url_and_a_relative_path)
{
	char *s = url_join("http://h/d/", "sub dir/f%.bin", false);

	cr_assert_str_eq(s, "http://h/d/sub%20dir/f%25.bin");
	free(s);
	s = url_join("http://h/d", "x", true);
	cr_assert_str_eq(s, "http://h/d/x/");
	free(s);
}

Test(url, names_a_file_after_the_last_component)
{
	char *s = url_basename("/a/b%20c.bin");

	cr_assert_str_eq(s, "b c.bin");
	free(s);
	cr_assert_null(url_basename("/a/"));
	cr_assert_null(url_basename("/a/%00"));
}

Test(url, redacts_the_query_of_an_http_url)
{
	static const char *const cases[][2] = {
		{ "http://h/f.bin?token=s3cr3t", "http://h/f.bin?" URL_REDACTED },
		{ "https://h:8443/a/f?X-Amz-Signature=ab&x=1#frag",
			"https://h:8443/a/f?" URL_REDACTED },
		{ "HTTP://h/f?", "HTTP://h/f?" URL_REDACTED },
		{ "http://user:pw@h/f", "http://" URL_REDACTED "@h/f" },
		{ "http://h/dir/", "http://h/dir/" },
		{ "http://h/f#frag", "http://h/f#frag" },
		{ "s3://bucket/prefix/", "s3://bucket/prefix/" },
		{ "/data/what?/", "/data/what?/" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *r = url_redact(cases[i][0]);

		cr_assert_not_null(r);
		cr_expect_str_eq(r, cases[i][1]);
		free(r);
	}
}

Test(url, redacts_the_query_in_place_without_moving_the_string)
{
	char arg[] = "http://h/f.bin?token=s3cr3t-and-more";
	char shorter[] = "http://h/f?ab";
	char local[] = "/data/what?/";

	cr_expect(url_redact_in_place(arg));
	cr_expect_str_eq(arg, "http://h/f.bin?" URL_REDACTED);
	cr_expect_eq(memchr(arg, 's', sizeof(arg)), NULL, "no byte of the token is left");
	cr_expect(url_redact_in_place(shorter));
	cr_expect_str_eq(shorter, "http://h/f?RE");
	cr_expect(!url_redact_in_place(local));
	cr_expect_str_eq(local, "/data/what?/");
}

Test(url, names_a_bad_url_without_its_query)
{
	struct url u;
	char err[256];

	cr_expect_eq(url_parse(&u, "http://h:99999/f?token=s3cr3t", err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "bad port"), "%s", err);
	cr_expect_null(strstr(err, "s3cr3t"), "%s", err);
	cr_expect_eq(url_parse(&u, "http://u:pw@h/f", err, sizeof(err)), -EINVAL);
	cr_expect_null(strstr(err, "pw"), "%s", err);
}

Test(url, a_bad_url_with_control_bytes_is_named_on_one_line)
{
	struct url u;
	char err[256];

	/* Found by fuzz_url: the reason quoted the URL as given, line feed and all. */
	cr_expect_eq(url_parse(&u, "https://mz-S\nign\r\x01/x", err, sizeof(err)), -EINVAL);
	cr_expect_null(strpbrk(err, "\r\n\x01"), "%s", err);
	cr_expect(strstr(err, "mz-S?ign"), "%s", err);
}

/* What a hostile server may send as a name in a listing, a manifest or an S3 key. */
Test(url, refuses_names_that_would_leave_their_directory_or_be_cut)
{
	char name[300];

	memset(name, 'a', sizeof(name));
	cr_expect(!url_name_is_safe("", 0));
	cr_expect(!url_name_is_safe(".", 1));
	cr_expect(!url_name_is_safe("..", 2));
	cr_expect(!url_name_is_safe("a/b", 3));
	cr_expect(!url_name_is_safe("/", 1));
	cr_expect(!url_name_is_safe("../etc", 6));
	cr_expect(!url_name_is_safe("a\0b", 3), "a NUL would cut the name short");
	cr_expect(!url_name_is_safe("..\0x", 4));
	cr_expect(!url_name_is_safe(name, 256), "over NAME_MAX");
	cr_expect(!url_name_is_safe(name, sizeof(name)));
}

Test(url, accepts_names_a_local_file_system_would)
{
	char name[255];

	memset(name, 'a', sizeof(name));
	cr_expect(url_name_is_safe(name, sizeof(name)), "exactly NAME_MAX");
	cr_expect(url_name_is_safe("...", 3));
	cr_expect(url_name_is_safe(".hidden", 7));
	cr_expect(url_name_is_safe("..x", 3));
	cr_expect(url_name_is_safe("tab\there", 8));
	cr_expect(url_name_is_safe("naïve file %41.txt", strlen("naïve file %41.txt")));
	cr_expect(url_name_is_safe("\xff\xfe", 2), "bytes, not necessarily UTF-8");
	/* Only name_bytes count: a name cut out of a longer key. */
	cr_expect(url_name_is_safe("ab/cd", 2));
	cr_expect(!url_name_is_safe("ab/cd", 3));
}

Test(url, a_safe_path_is_safe_names_joined_by_single_slashes)
{
	cr_expect(url_path_is_safe("a"));
	cr_expect(url_path_is_safe("a/b c/.d"));
	cr_expect(!url_path_is_safe(""));
	cr_expect(!url_path_is_safe("/a"));
	cr_expect(!url_path_is_safe("a/"));
	cr_expect(!url_path_is_safe("a//b"));
	cr_expect(!url_path_is_safe("a/../b"));
	cr_expect(!url_path_is_safe("a/./b"));
	cr_expect(!url_path_is_safe(".."));
}
