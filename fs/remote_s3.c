/* placeholder until the S3 backend lands: s3:// sources are refused with a clear reason. */
#include "config.h"

#include <errno.h>
#include <stdio.h>

#include "fs/remote.h"

static int s3_open(struct remote **out, const char *source, const struct remote_options *opt,
	char *errbuf, size_t errlen)
{
	snprintf(errbuf, errlen, "s3:// sources are not supported by this build yet");
	return -ENOTSUP;
}

const struct remote_ops remote_s3_ops = {
	.name = "s3",
	.open = s3_open,
};
