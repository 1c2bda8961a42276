/* LD_PRELOAD shim that lets Criterion tests run under ThreadSanitizer (scripts/test.sh, tree
 * build-tsan). Criterion's BoxFort maps its inheritable arena at a random address in
 * [0x200000000000, 0x600000000000) chosen with rand_r, and gives up after 10 addresses that
 * are taken; TSan reserves nearly all of that range for its shadow, so Criterion aborts with
 * "Could not initialize inheritable arena" (Criterion issue #274, open since 2018). Here
 * rand_r, when libcriterion calls it, picks only addresses in the one window TSan leaves to
 * the application there (0x550000000000-0x568000000000, where position-independent
 * binaries load). Every other caller gets glibc's rand_r unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

int rand_r(unsigned int *seed)
{
	static int (*real)(unsigned int *);
	Dl_info info;
	int r;

	if (!real)
		real = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
	r = real(seed);
	if (dladdr(__builtin_return_address(0), &info) && info.dli_fname &&
		strstr(info.dli_fname, "libcriterion")) {
		/* base = 0x200000000000 + r * 2^24, r masked with 0x3fffff by BoxFort */
		r = 0x350000 + r % 0x18000;
	}
	return r;
}
