/* Fuzz target for fs/remote/url.c: URL parsing (source URLs, and hrefs the HTTP backend follows),
 * percent-decoding of names from listings and manifests, and the encoders and join that build
 * request URLs. A parsed URL is complete; a decoded name holds no NUL; encoding then decoding
 * gives the name back; an encoded component has no '/'.
 * Input: a URL, also taken as a percent-encoded name and as a path. */
#include "config.h"

#include <errno.h>

#include "fs/remote/url.h"
#include "tests/fuzz/fuzz_util.h"

static void check_roundtrip(const char *name, bool component)
{
	char *enc = component ? url_encode_component(name) : url_encode_path(name), *dec = NULL;

	if (!enc)
		return; /* ENOMEM */
	for (const char *p = enc; *p; p++)
		fuzz_check((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				   (*p >= '0' && *p <= '9') || strchr("-._~%", *p) ||
				   (!component && *p == '/'),
			"an encoded string holds only unreserved bytes, escapes (and '/')");
	fuzz_check(url_decode(enc, strlen(enc), &dec) == 0, "what url_encode writes decodes");
	fuzz_check(!strcmp(dec, name), "decode(encode(name)) == name");
	free(dec);
	free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_copy(data, size, true), err[256] = "", *dec = NULL, *j, *b;
	struct url u = { 0 };
	int ret;

	if (!s)
		return 0;
	/* url_parse takes a C string: the input up to its first NUL. */
	ret = url_parse(&u, s, err, sizeof(err));
	fuzz_check(ret == 0 || ret == -EINVAL || ret == -ENOMEM, "url_parse: 0 or -EINVAL");
	if (ret == 0) {
		fuzz_check(u.scheme && (!strcmp(u.scheme, "http") || !strcmp(u.scheme, "https")),
			"the scheme is http or https");
		fuzz_check(u.host && u.host[0], "a host");
		fuzz_check(u.port >= 1 && u.port <= 65535, "a port 1..65535");
		fuzz_check(u.path && u.path[0] == '/', "the path starts with '/'");
		fuzz_check(!strchr(u.host, '/') && !strchr(u.path, '#') && !strchr(u.path, '?'),
			"host, path and query are split");
	} else if (ret == -EINVAL) {
		fuzz_check(err[0] != '\0', "a failure says why");
		fuzz_check_reason(err);
	}
	url_done(&u);
	url_done(&u);

	ret = url_decode(s, size, &dec);
	fuzz_check(ret == 0 || ret == -EINVAL || ret == -ENOMEM, "url_decode: 0 or -EINVAL");
	if (ret == 0) {
		fuzz_check(strlen(dec) <= size, "decoding never grows");
		fuzz_check(memchr(s, '\0', size) == NULL, "an input with a NUL byte is refused");
		check_roundtrip(dec, false);
		check_roundtrip(dec, true);
		j = url_join("http://127.0.0.1:8080/d%20x/", dec, size & 1);
		if (j) {
			fuzz_check(!strncmp(j, "http://127.0.0.1:8080/d%20x/", 28),
				"a join keeps the base");
			fuzz_check(!strchr(j + 28, '?') && !strchr(j + 28, '#') &&
					   !strchr(j + 28, ' '),
				"a joined name cannot add a query, fragment or blank");
			free(j);
		}
		free(dec);
	}
	b = url_basename(s);
	if (b) {
		fuzz_check(!strchr(b, '/') || memchr(s, '%', size), "a basename is one component");
		free(b);
	}
	free(s);
	return 0;
}
