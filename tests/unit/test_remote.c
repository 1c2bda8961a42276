/* Tests of the helpers every backend shares (fs/remote.c). */
#include <criterion/criterion.h>

#include "fs/remote/remote.h"

Test(remote, takes_no_etag_that_is_star_empty_or_weak_as_a_version)
{
	static const char *const none[] = { "*", "\"*\"", "W/\"*\"", "", "\"\"", "W/\"\"", "W/",
		"W/\"x\"", "W/\"65af-3039\"" };

	cr_expect(!remote_etag_is_version(NULL));
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
		cr_expect(!remote_etag_is_version(none[i]), "'%s' is no version", none[i]);
}

Test(remote, takes_an_ordinary_etag_as_a_version)
{
	static const char *const some[] = { "\"65af-3039\"", "abc", "\"**\"", "\"a*\"" };

	for (size_t i = 0; i < sizeof(some) / sizeof(some[0]); i++)
		cr_expect(remote_etag_is_version(some[i]), "'%s' is a version", some[i]);
}
