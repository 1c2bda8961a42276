/* Fuzz target for the header parsers of fs/remote/net.c that read a server's reply: the header-line
 * splitter net_header_value (as libcurl's header callback sees lines) and the Content-Range
 * parser the fetch engine checks every 206 with. An accepted range is well formed
 * (start <= end < total) and written back in canonical form it parses to the same numbers.
 * Retry-After, when the build has its parser, gives milliseconds or -1.
 * Input: one header line, or (when it is not a known header) a Content-Range value. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>

#include "fs/remote/net.h"
#include "tests/fuzz/fuzz_util.h"

static void check_range(const char *v, size_t len)
{
	uint64_t a = 1, b = 2, t = 3, a2, b2, t2;
	char canon[80];
	int ret, n;

	ret = net_parse_content_range(v, len, &a, &b, &t);
	fuzz_check(ret == 0 || ret == -EINVAL, "net_parse_content_range: 0 or -EINVAL");
	if (ret) {
		fuzz_check(a == 1 && b == 2 && t == 3, "a refused range leaves the outputs alone");
		return;
	}
	fuzz_check(a <= b && b < t, "an accepted range is start <= end < total");
	n = snprintf(canon, sizeof(canon), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", a, b,
		t);
	fuzz_check(net_parse_content_range(canon, (size_t)n, &a2, &b2, &t2) == 0 && a2 == a &&
			   b2 == b && t2 == t,
		"the canonical form of an accepted range parses to the same range");
}

/* Parses Retry-After (delta-seconds or an HTTP date) into milliseconds, -1 when it is
 * neither. It comes with the fetch engine's branch: weak, so this target builds and runs
 * with or without it. */
int64_t net_parse_retry_after(const char *value, size_t len) __attribute__((weak));

static void check_retry_after(const char *v, size_t len)
{
	int64_t ms;

	if (!net_parse_retry_after)
		return;
	ms = net_parse_retry_after(v, len);
	fuzz_check(ms >= -1, "Retry-After: milliseconds, or -1 when it is not one");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "Content-Range", "ETag", "Last-Modified",
		"Retry-After", "Content-Length", "Content-Type", "x-amz-request-id", "Location" };
	char *line = fuzz_copy(data, size, false);
	bool known = false;

	if (!line)
		return 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t vlen = (size_t)-1, nl = strlen(names[i]);
		const char *v = net_header_value(line, size, names[i], &vlen);

		if (!v)
			continue;
		known = true;
		fuzz_check(size > nl && line[nl] == ':', "a match is 'Name:'");
		fuzz_check(v >= line + nl + 1 && v <= line + size, "the value lies in the line");
		fuzz_check(vlen <= (size_t)(line + size - v), "the value ends in the line");
		fuzz_check(vlen == 0 || (v[0] != ' ' && v[0] != '\t'), "no leading blank");
		fuzz_check(vlen == 0 || !memchr(" \t\r\n", v[vlen - 1], 4),
			"no trailing blank or CRLF");
		if (i == 0)
			check_range(v, vlen);
		if (i == 3)
			check_retry_after(v, vlen);
	}
	if (!known) {
		check_range(line, size);
		check_retry_after(line, size);
	}
	free(line);
	return 0;
}
