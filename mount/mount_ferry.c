/* mount.ferry: the helper mount(8) runs for fstab lines of type ferry,
 *   mount.ferry SOURCE DIR [-sfnv] [-o OPTIONS]
 * translates the fstab options and runs `ferry mount`. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mount/cli.h"
#include "mount/cmd.h"

#define MAX_ARGS 64

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mount.ferry SOURCE MOUNTPOINT [-o OPTIONS]\n"
		"  for /etc/fstab:  SOURCE MOUNTPOINT ferry ro,cache_dir=/var/cache/ferry 0 0\n"
		"  OPTIONS: cache_dir=, cache_size=, chunk_size=, ca_file=, metadata_ttl=,\n"
		"  max_transfers=, dir_readahead=, endpoint=, region=, profile=, addressing=,\n"
		"  no_sign_request, allow_outside_symlinks (show symlinks that are absolute or\n"
		"  leave the mount; hidden by default), shared_cache=s3://BUCKET/PREFIX,\n"
		"  shared_endpoint=, shared_region=, shared_profile=, shared_write_memory=\n"
		"  (the shared chunk tier), metrics_addr=HOST:PORT (Prometheus metrics),\n"
		"  verbose; ro, nodev, nosuid, _netdev,\n"
		"  noauto, user and the like are ignored;\n"
		"  anything else goes to FUSE (allow_other, ...).\n");
}

int main(int argc, char **argv)
{
	char *args[MAX_ARGS], *owned[MAX_ARGS], err[256] = "";
	const char *pos[2] = { NULL, NULL };
	const char *opts = NULL;
	int n = 0, npos = 0, nr_new, ret;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "-o")) {
			if (++i >= argc) {
				fprintf(stderr, "mount.ferry: -o needs options\n");
				return 1;
			}
			opts = argv[i];
		} else if (!strncmp(argv[i], "-o", 2)) {
			opts = argv[i] + 2;
		} else if (!strcmp(argv[i], "-t")) {
			i++; /* the type is ours */
		} else if (argv[i][0] == '-' && argv[i][1]) {
			/* -s (sloppy), -f (fake), -n (no mtab), -v: nothing to do for us */
			if (strchr(argv[i], 'f'))
				return 0;
		} else if (npos < 2) {
			pos[npos++] = argv[i];
		} else {
			fprintf(stderr, "mount.ferry: unexpected argument '%s'\n", argv[i]);
			return 1;
		}
	}
	if (npos != 2) {
		fprintf(stderr,
			"mount.ferry: expected SOURCE and MOUNTPOINT (try 'mount.ferry --help')\n");
		return 1;
	}
	args[n++] = "mount";
	ret = cli_fstab_to_args(opts, args, &n, MAX_ARGS - 3, err, sizeof(err));
	/* args[1 .. nr_new) are cli_fstab_to_args's strdups; kept apart, as getopt permutes args */
	nr_new = n;
	memcpy(owned, args, sizeof(owned[0]) * (size_t)n);
	if (ret) {
		fprintf(stderr, "mount.ferry: %s\n", err);
		ret = 1;
		goto out;
	}
	args[n++] = (char *)pos[0];
	args[n++] = (char *)pos[1];
	args[n] = NULL;
	ret = mount_main(n, args);
out:
	for (int i = 1; i < nr_new; i++)
		free(owned[i]);
	return ret;
}
