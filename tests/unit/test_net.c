/* Tests of the network error mapping, the header parsers and the retry backoff
 * (fs/remote/net.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "fs/remote/net.h"

Test(net, maps_curl_codes_onto_the_error_enum)
{
	cr_expect_eq(net_error_from_curl(CURLE_OK), NET_OK);
	cr_expect_eq(net_error_from_curl(CURLE_OPERATION_TIMEDOUT), NET_TIMEOUT);
	cr_expect_eq(net_error_from_curl(CURLE_COULDNT_CONNECT), NET_CONNECT);
	cr_expect_eq(net_error_from_curl(CURLE_COULDNT_RESOLVE_HOST), NET_RESOLVE);
	cr_expect_eq(net_error_from_curl(CURLE_PEER_FAILED_VERIFICATION), NET_TLS);
	cr_expect_eq(net_error_from_curl(CURLE_SSL_CONNECT_ERROR), NET_TLS);
	cr_expect_eq(net_error_from_curl(CURLE_RECV_ERROR), NET_RESET);
	cr_expect_eq(net_error_from_curl(CURLE_GOT_NOTHING), NET_RESET);
	cr_expect_eq(net_error_from_curl(CURLE_PARTIAL_FILE), NET_SHORT_BODY);
	cr_expect_eq(net_error_from_curl(CURLE_UNSUPPORTED_PROTOCOL), NET_OTHER);
}

Test(net, maps_http_statuses_onto_the_error_enum)
{
	cr_expect_eq(net_error_from_status(200), NET_OK);
	cr_expect_eq(net_error_from_status(206), NET_OK);
	cr_expect_eq(net_error_from_status(301), NET_BAD_RESPONSE);
	cr_expect_eq(net_error_from_status(400), NET_HTTP_4XX);
	cr_expect_eq(net_error_from_status(403), NET_HTTP_403);
	cr_expect_eq(net_error_from_status(404), NET_HTTP_404);
	cr_expect_eq(net_error_from_status(412), NET_HTTP_412);
	cr_expect_eq(net_error_from_status(416), NET_HTTP_416);
	cr_expect_eq(net_error_from_status(429), NET_HTTP_429);
	cr_expect_eq(net_error_from_status(500), NET_HTTP_5XX);
	cr_expect_eq(net_error_from_status(503), NET_HTTP_5XX);
	cr_expect_eq(net_error_of(CURLE_COULDNT_CONNECT, 0), NET_CONNECT);
	cr_expect_eq(net_error_of(CURLE_OK, 502), NET_HTTP_5XX);
}

Test(net, retries_only_what_may_heal)
{
	for (int e = 0; e < NET_NR_ERRORS; e++) {
		bool want = e == NET_TIMEOUT || e == NET_RESET || e == NET_HTTP_5XX ||
			    e == NET_HTTP_429 || e == NET_SHORT_BODY || e == NET_BAD_RESPONSE;

		cr_expect_eq(net_error_is_retryable(e), want, "%s", net_error_str(e));
		cr_expect_neq(strlen(net_error_str(e)), 0);
	}
	cr_expect_eq(net_error_to_errno(NET_HTTP_412), -ESTALE);
	cr_expect_eq(net_error_to_errno(NET_HTTP_416), -ESTALE);
	cr_expect_eq(net_error_to_errno(NET_CHANGED), -ESTALE);
	cr_expect_eq(net_error_to_errno(NET_HTTP_403), -EACCES);
	cr_expect_eq(net_error_to_errno(NET_HTTP_404), -ENOENT);
	cr_expect_eq(net_error_to_errno(NET_BAD_RESPONSE), -EIO);
	cr_expect_eq(net_error_to_errno(NET_HTTP_429), -EIO);
	cr_expect_eq(net_error_to_errno(NET_HTTP_5XX), -EIO);
	cr_expect_eq(net_error_to_errno(NET_OK), 0);
}

Test(net, parses_content_range)
{
	uint64_t a, b, t;
	const char *v = " bytes 100-199/1000\r\n";

	cr_assert_eq(net_parse_content_range(v, strlen(v), &a, &b, &t), 0);
	cr_expect_eq(a, 100);
	cr_expect_eq(b, 199);
	cr_expect_eq(t, 1000);
	v = "bytes 0-18446744073709551614/18446744073709551615";
	cr_assert_eq(net_parse_content_range(v, strlen(v), &a, &b, &t), 0);
	cr_expect_eq(t, UINT64_MAX);
}

Test(net, refuses_malformed_content_range)
{
	static const char *bad[] = { "", "bytes", "bytes */1000", "bytes 1-2/*", "bytes 5-4/10",
		"bytes 0-10/10", "items 0-1/2", "bytes 0-1/2x", "bytes -1-2/3", "bytes 0-1",
		"bytes 0-18446744073709551616/18446744073709551617", "bytes0-1/2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t a, b, t;

		cr_expect_eq(net_parse_content_range(bad[i], strlen(bad[i]), &a, &b, &t), -EINVAL,
			"%s", bad[i]);
	}
}

Test(net, formats_http_dates_in_english_gmt)
{
	char buf[40];

	net_format_http_date(1706004000, buf, sizeof(buf));
	cr_assert_str_eq(buf, "Tue, 23 Jan 2024 10:00:00 GMT");
	cr_assert_eq(curl_getdate(buf, NULL), 1706004000);
}

Test(net, finds_header_values_without_regard_to_case)
{
	const char *line = "content-RANGE:   bytes 0-1/2 \r\n";
	size_t vl;
	const char *v = net_header_value(line, strlen(line), "Content-Range", &vl);

	cr_assert_not_null(v);
	cr_assert_eq(vl, strlen("bytes 0-1/2"));
	cr_assert_eq(strncmp(v, "bytes 0-1/2", vl), 0);
	cr_assert_null(net_header_value(line, strlen(line), "Content-Length", &vl));
}

Test(net, parses_retry_after_seconds_and_dates)
{
	char date[64];

	cr_expect_eq(net_parse_retry_after("1", 1), 1000);
	cr_expect_eq(net_parse_retry_after(" 120\r\n", 6), 120000);
	cr_expect_eq(net_parse_retry_after("0", 1), 0);
	cr_expect_eq(net_parse_retry_after("", 0), -1);
	cr_expect_eq(net_parse_retry_after("soon", 4), -1);
	cr_expect_eq(net_parse_retry_after("-5", 2), -1);
	cr_expect_eq(net_parse_retry_after("99999999999999999999", 20), -1);
	/* A date in the past asks for no wait; one 100 s ahead for about 100 s. */
	cr_expect_eq(net_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 29), 0);
	/* A date so far ahead that its milliseconds overflow (found by fuzz_http_headers). */
	cr_expect_eq(net_parse_retry_after("d1Oct762222222\r\n", 16), INT64_MAX);
	net_format_http_date((int64_t)time(NULL) + 100, date, sizeof(date));
	int64_t ms = net_parse_retry_after(date, strlen(date));
	cr_expect(ms >= 98000 && ms <= 100000, "%lld ms", (long long)ms);
}

Test(net, backoff_doubles_per_retry_within_half_to_one_and_a_half)
{
	for (unsigned retry = 0; retry < 5; retry++) {
		uint64_t mid = 100u << retry, lo = mid, hi = 0;

		for (int i = 0; i < 2000; i++) {
			uint64_t ms = net_backoff_ms(retry, 100, 100000, -1);

			cr_assert(ms >= mid / 2 && ms <= mid + mid / 2, "retry %u: %llu ms", retry,
				(unsigned long long)ms);
			lo = ms < lo ? ms : lo;
			hi = ms > hi ? ms : hi;
		}
		/* jittered: 2000 draws cover most of the range, not one value */
		cr_expect(lo < mid * 3 / 4 && hi > mid * 5 / 4, "retry %u: %llu..%llu ms", retry,
			(unsigned long long)lo, (unsigned long long)hi);
	}
}

Test(net, backoff_stops_doubling_at_the_cap)
{
	for (int i = 0; i < 1000; i++) {
		uint64_t ms = net_backoff_ms(40, 100, 2000, -1);

		cr_assert(ms >= 1000 && ms <= 3000, "%llu ms", (unsigned long long)ms);
	}
}

Test(net, backoff_takes_a_longer_retry_after_within_the_cap)
{
	for (int i = 0; i < 1000; i++) {
		uint64_t asked = net_backoff_ms(0, 100, 10000, 4000);
		uint64_t capped = net_backoff_ms(0, 100, 10000, 60000);
		uint64_t shorter = net_backoff_ms(0, 100, 10000, 10);

		cr_assert(asked >= 4000 && asked <= 5000, "%llu", (unsigned long long)asked);
		cr_assert(capped >= 10000 && capped <= 12500, "%llu", (unsigned long long)capped);
		cr_assert(shorter >= 50 && shorter <= 150, "%llu", (unsigned long long)shorter);
	}
}

static void *draw_backoffs(void *arg)
{
	uint64_t *out = arg;

	for (int i = 0; i < 16; i++)
		out[i] = net_backoff_ms(10, 1000, 1u << 30, -1);
	return NULL;
}

Test(net, backoff_jitter_differs_between_threads)
{
	uint64_t a[16], b[16];
	pthread_t ta, tb;

	pthread_create(&ta, NULL, draw_backoffs, a);
	pthread_create(&tb, NULL, draw_backoffs, b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	/* Two threads that fail together must not sleep alike (one seed shared, or none, would) */
	cr_expect(memcmp(a, b, sizeof(a)), "two threads drew the same 16 delays");
}
