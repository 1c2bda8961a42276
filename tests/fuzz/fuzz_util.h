/* Helpers shared by the fuzz targets: an invariant check that aborts (so libFuzzer and the
 * corpus replayer both report it), the one-line-reason check of the parsers' error contract,
 * and a NUL-terminated heap copy of the input so a sanitizer sees any read past its end. */
#ifndef FERRY_FUZZ_UTIL_H
#define FERRY_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_check(ok, what)                                                                       \
	do {                                                                                       \
		if (!(ok)) {                                                                       \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__,       \
				what);                                                             \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* A failure's reason: present and one line. */
static inline void fuzz_check_reason(const char *err)
{
	fuzz_check(err[0] != '\0', "a failure says why");
	fuzz_check(strchr(err, '\n') == NULL, "the reason is one line");
}

/* Exactly n bytes of data plus a NUL the parser must not need (nul_terminated false: no NUL,
 * for parsers that take a length). NULL when out of memory. */
static inline char *fuzz_copy(const uint8_t *data, size_t n, bool nul_terminated)
{
	char *s = malloc(n + (nul_terminated ? 1 : 0) + (n == 0));

	if (!s)
		return NULL;
	memcpy(s, data, n);
	if (nul_terminated)
		s[n] = '\0';
	return s;
}

#endif
