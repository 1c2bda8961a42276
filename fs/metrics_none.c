/* The --metrics-addr server of a build without libmicrohttpd (-Dmetrics=disabled, or auto on a
 * machine without it): the address is refused at parse time with one line, so a mount never
 * starts without the server it was asked for. metrics_http.c is the real one. */
#include <errno.h>
#include <stdio.h>

#include "fs/metrics.h"

int metrics_check_addr(const char *addr, char *errbuf, size_t errlen)
{
	snprintf(errbuf, errlen,
		"--metrics-addr: this build has no metrics server (built without libmicrohttpd)");
	return -ENOTSUP;
}

int metrics_server_new(struct metrics_server **out, const char *addr, struct ferryfs *fs,
	char *errbuf, size_t errlen)
{
	*out = NULL;
	return metrics_check_addr(addr, errbuf, errlen);
}

void metrics_server_free(struct metrics_server *s)
{
}
