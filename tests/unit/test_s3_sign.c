/* The SigV4 signer: AWS's published S3 examples (from the S3 API reference's "Signature
 * Calculations for the Authorization Header" page), then the encoding and header rules. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/aws_config.h"
#include "fs/remote/s3_sign.h"

#define EXAMPLE_TIME 1369353600 /* 20130524T000000Z */

static struct aws_credentials example_cred = {
	.access_key_id = "AKIAIOSFODNN7EXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

static const char *sig_of(const char *auth)
{
	const char *s = strstr(auth, "Signature=");

	return s ? s + 10 : "";
}

Test(s3_sign, reproduces_the_aws_get_object_example)
{
	struct s3_kv h[] = { { "Range", "bytes=0-9" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "examplebucket.s3.amazonaws.com",
		.path = "/test.txt",
		.headers = h,
		.nr_headers = 1,
		.region = "us-east-1",
		.when = EXAMPLE_TIME,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_str_eq(out.canonical_request,
		"GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
		"x-amz-content-sha256:"
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
		"x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	cr_assert_str_eq(out.string_to_sign,
		"AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
		"7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	cr_assert_str_eq(out.authorization,
		"AWS4-HMAC-SHA256 "
		"Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	s3_signed_done(&out);
}

Test(s3_sign, reproduces_the_aws_get_bucket_lifecycle_example)
{
	struct s3_kv q[] = { { "lifecycle", "" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "examplebucket.s3.amazonaws.com",
		.path = "/",
		.query = q,
		.nr_query = 1,
		.region = "us-east-1",
		.when = EXAMPLE_TIME,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_str_eq(out.encoded_query, "lifecycle=");
	cr_assert_str_eq(sig_of(out.authorization),
		"fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
	s3_signed_done(&out);
}

Test(s3_sign, reproduces_the_aws_list_objects_example)
{
	struct s3_kv q[] = { { "prefix", "J" }, { "max-keys", "2" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "examplebucket.s3.amazonaws.com",
		.path = "/",
		.query = q,
		.nr_query = 2,
		.region = "us-east-1",
		.when = EXAMPLE_TIME,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_str_eq(out.encoded_query, "max-keys=2&prefix=J");
	cr_assert_str_eq(sig_of(out.authorization),
		"34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
	s3_signed_done(&out);
}

Test(s3_sign, encodes_keys_byte_by_byte_keeping_only_unreserved_and_slash)
{
	char *e = s3_uri_encode("a b+c=d%e/é~_.-*'()!$&,;:@?#[]", true);

	cr_assert_str_eq(e,
		"a%20b%2Bc%3Dd%25e/%C3%A9~_.-%2A%27%28%29%21%24%26%2C%3B%3A%40%3F%23%5B%5D");
	free(e);
	e = s3_uri_encode("x/y//z", false);
	cr_assert_str_eq(e, "x%2Fy%2F%2Fz");
	free(e);
	e = s3_uri_encode("\xf0\x9f\x98\x80", true);
	cr_assert_str_eq(e, "%F0%9F%98%80");
	free(e);
}

Test(s3_sign, sorts_the_query_by_encoded_name_then_value)
{
	struct s3_kv q[] = { { "b", "2" }, { "a", "z" }, { "a", "y" }, { "A", "=&" },
		{ "continuation-token", "1/ab+c==" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/b",
		.query = q,
		.nr_query = 5,
		.region = "r",
		.when = 0,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_str_eq(out.encoded_query,
		"A=%3D%26&a=y&a=z&b=2&continuation-token=1%2Fab%2Bc%3D%3D");
	cr_assert(strstr(out.canonical_request, "\nA=%3D%26&a=y&a=z&b=2&") != NULL);
	s3_signed_done(&out);
}

Test(s3_sign, signs_the_session_token_and_sends_it)
{
	struct aws_credentials c = example_cred;
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/k",
		.region = "eu-west-1",
		.when = EXAMPLE_TIME,
		.cred = &c };
	struct s3_signed out;
	bool sent = false;

	c.session_token = "FwoGZXIvYXdzE//token+/=";
	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert(strstr(out.canonical_request, "x-amz-security-token:FwoGZXIvYXdzE//token+/=\n"));
	cr_assert(strstr(out.authorization,
		"SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
	for (size_t i = 0; i < out.nr_header_lines; i++)
		sent |= !strcmp(out.header_lines[i],
			"x-amz-security-token: FwoGZXIvYXdzE//token+/=");
	cr_assert(sent);
	s3_signed_done(&out);
}

Test(s3_sign, unsigned_payload_goes_in_the_header_and_the_request)
{
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/k",
		.region = "us-east-1",
		.payload_hash = S3_UNSIGNED_PAYLOAD,
		.when = EXAMPLE_TIME,
		.cred = &example_cred };
	struct s3_signed out;
	size_t n;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	n = strlen(out.canonical_request);
	cr_assert_str_eq(out.canonical_request + n - strlen("\nUNSIGNED-PAYLOAD"),
		"\nUNSIGNED-PAYLOAD");
	cr_assert(strstr(out.canonical_request, "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"));
	s3_signed_done(&out);
}

Test(s3_sign, trims_header_values_and_lowercases_names)
{
	struct s3_kv h[] = { { "X-Amz-Meta-Note", "  two   spaces\there  " } };
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/k",
		.headers = h,
		.nr_headers = 1,
		.region = "r",
		.when = 0,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert(strstr(out.canonical_request, "\nx-amz-meta-note:two spaces here\n"));
	s3_signed_done(&out);
}

Test(s3_sign, refuses_a_header_that_could_split_the_request)
{
	struct s3_kv h[] = { { "Range", "bytes=0-1\r\nX-Evil: 1" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/k",
		.headers = h,
		.nr_headers = 1,
		.region = "r",
		.when = 0,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), -EINVAL);
	h[0] = (struct s3_kv){ "Host", "other" };
	cr_assert_eq(s3_sign_request(&in, &out), -EINVAL);
}

Test(s3_sign, anonymous_requests_carry_no_signature)
{
	struct s3_kv h[] = { { "Range", "bytes=0-1" } };
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/a b",
		.headers = h,
		.nr_headers = 1,
		.region = "r",
		.when = 0 };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_null(out.authorization);
	cr_assert_eq(out.nr_header_lines, 1);
	cr_assert_str_eq(out.header_lines[0], "range: bytes=0-1");
	cr_assert_str_eq(out.encoded_path, "/a%20b");
	s3_signed_done(&out);
}

Test(s3_sign, never_puts_the_secret_in_any_output)
{
	struct s3_sign_input in = { .method = "GET",
		.host = "h",
		.path = "/k",
		.region = "r",
		.when = EXAMPLE_TIME,
		.cred = &example_cred };
	struct s3_signed out;

	cr_assert_eq(s3_sign_request(&in, &out), 0);
	cr_assert_null(strstr(out.canonical_request, "EXAMPLEKEY"));
	cr_assert_null(strstr(out.string_to_sign, "EXAMPLEKEY"));
	cr_assert_null(strstr(out.authorization, "EXAMPLEKEY"));
	for (size_t i = 0; i < out.nr_header_lines; i++)
		cr_assert_null(strstr(out.header_lines[i], "EXAMPLEKEY"));
	s3_signed_done(&out);
}

Test(s3_sign, hashes_the_empty_body_as_sha256_of_nothing)
{
	char hex[65];

	s3_sha256_hex("", 0, hex);
	cr_assert_str_eq(hex, S3_EMPTY_SHA256);
	s3_sha256_hex("abc", 3, hex);
	cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
