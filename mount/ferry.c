/* The `ferry` command: dispatches to mount, umount, stat, warm, manifest (mount/), data
 * (loader/) and train (train/). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "loader/loader.h"
#include "mount/cmd.h"
#include "train/train.h"

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *what;
} commands[] = {
	{ "mount", mount_main, "mount a remote dataset as a read-only directory" },
	{ "umount", umount_main, "unmount a ferry mount and wait for its daemon to exit" },
	{ "stat", stat_main, "show a mount's cache and fetch counters" },
	{ "warm", warm_main, "fetch files or trees into the cache ahead of use" },
	{ "manifest", manifest_main, "write DIR/.ferry-manifest for a local tree" },
	{ "fluid-mount", fluid_mount_main,
		"mount what a Fluid ThinRuntime's config.json describes" },
	{ "data", data_main, "inspect and check token datasets" },
	{ "train", train_main, "train a GPT model from token shards" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: ferry COMMAND [ARGS...]\n\n"
		     "ferry carries training data from a remote store through a local chunk cache\n"
		     "to a read-only directory, and on to its own loader and trainer.\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].what);
	fprintf(out, "\n'ferry COMMAND --help' describes a command; docs/ferry.md has them all.\n"
		     "options: -h, --help   this text;  -V, --version   the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("ferry %s\n", FERRY_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "unmount"))
		argv[1] = "umount";
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "ferry: unknown command '%s' (try 'ferry --help')\n", argv[1]);
	return 2;
}
