/* `ferry mount`: checks everything it can before forking (so a bad input leaves nothing
 * mounted and says why in one line), then forks the daemon and waits for its "ok". */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/ferryfs.h"
#include "fs/metrics.h"
#include "fs/remote/remote.h"
#include "fs/remote/url.h"
#include "fs/tier.h"
#include "mount/cli.h"
#include "mount/cmd.h"

#define DEFAULT_CACHE_DIR "/var/cache/ferry"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ferry mount [OPTIONS] SOURCE MOUNTPOINT\n"
		"\n"
		"Mounts SOURCE read-only at MOUNTPOINT (an empty directory), backed by a chunk cache\n"
		"on local disk, and returns once the mount is live. SOURCE is http(s)://host/path/\n"
		"(a directory with an index or a .ferry-manifest, or one file), s3://bucket/prefix,\n"
		"or a local directory. A URL's query (a token) is shown as ?REDACTED everywhere\n"
		"(mount table, process list, logs, ferry stat) and sent only to the server.\n"
		"\n"
		"  --cache-dir DIR       root of the caches (default %s); each source\n"
		"                        (URL or endpoint, region, bucket, prefix, chunk size)\n"
		"                        gets its own private subdirectory, kept across mounts\n"
		"  --cache-size SIZE     limit on cached bytes, e.g. 50G (K/M/G/T; default: none)\n"
		"  --chunk-size SIZE     unit of fetching and caching, a power of two from 64K\n"
		"                        to 64M (default 8M); another size is another cache\n"
		"  --metadata-ttl TIME   re-list directories after TIME (e.g. 90s, 30m, 1h;\n"
		"                        'never'; default 1h)\n"
		"  --max-transfers N     transfers in flight (default 16)\n"
		"  --stall-timeout TIME  a transfer under 1 KiB/s for TIME is given up and\n"
		"                        retried (e.g. 10s; default 30s)\n"
		"  --dir-readahead N     when files of a directory are opened in listing order,\n"
		"                        fetch the next N ahead (default 32; 0: off)\n"
		"  --ca-file FILE        extra CA certificates for HTTPS (PEM)\n"
		"  --allow-outside-symlinks\n"
		"                        show symlinks whose target is absolute or leaves the\n"
		"                        mount; by default they are hidden (one warning)\n"
		"  --metrics-addr HOST:PORT\n"
		"                        serve Prometheus metrics at http://HOST:PORT/metrics\n"
		"                        (e.g. 127.0.0.1:9100, [::1]:9100; off by default); listens\n"
		"                        on that address only, read-only and unauthenticated:\n"
		"                        anyone who reaches it reads the counters\n"
		"  -o OPTIONS            FUSE mount options, comma-separated (allow_other, ...)\n"
		"  -f, --foreground      stay in the foreground, log to stderr\n"
		"  -v, --verbose         more log output (twice: debug)\n"
		"  -h, --help            this text\n"
		"S3 sources:\n"
		"  --endpoint URL        S3 endpoint (default: AWS for the region)\n"
		"  --region NAME         region (default from AWS_REGION or the profile)\n"
		"  --profile NAME        credentials profile (default AWS_PROFILE or 'default')\n"
		"  --addressing MODE     path, virtual or auto (default auto)\n"
		"  --no-sign-request     anonymous access to a public bucket\n"
		"Shared chunk tier (an S3 bucket the mounts of a cluster share; docs/ferry.md):\n"
		"  --shared-cache s3://BUCKET/PREFIX\n"
		"                        read chunks from there before the origin, and put\n"
		"                        there every chunk the origin sends (in the background)\n"
		"  --shared-endpoint URL its S3 endpoint (default: as for S3 sources)\n"
		"  --shared-region NAME  its region\n"
		"  --shared-profile NAME its credentials profile (default: the AWS chain)\n"
		"  --shared-write-memory SIZE\n"
		"                        memory for chunks waiting to be written to the tier\n"
		"                        (default 64M); past it they wait by name and are read\n"
		"                        back from the cache\n",
		DEFAULT_CACHE_DIR);
}

enum {
	OPT_CACHE_DIR = 256,
	OPT_CACHE_SIZE,
	OPT_CHUNK_SIZE,
	OPT_CA_FILE,
	OPT_TTL,
	OPT_MAX_TRANSFERS,
	OPT_DIR_READAHEAD,
	OPT_STALL_TIMEOUT,
	OPT_ENDPOINT,
	OPT_REGION,
	OPT_PROFILE,
	OPT_ADDRESSING,
	OPT_NO_SIGN,
	OPT_INSECURE,
	OPT_ALLOW_OUTSIDE_SYMLINKS,
	OPT_SHARED_CACHE,
	OPT_SHARED_ENDPOINT,
	OPT_SHARED_REGION,
	OPT_SHARED_PROFILE,
	OPT_SHARED_WRITE_MEMORY,
	OPT_METRICS_ADDR,
};

static const struct option long_opts[] = {
	{ "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
	{ "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
	{ "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
	{ "ca-file", required_argument, NULL, OPT_CA_FILE },
	{ "metadata-ttl", required_argument, NULL, OPT_TTL },
	{ "max-transfers", required_argument, NULL, OPT_MAX_TRANSFERS },
	{ "dir-readahead", required_argument, NULL, OPT_DIR_READAHEAD },
	{ "stall-timeout", required_argument, NULL, OPT_STALL_TIMEOUT },
	{ "endpoint", required_argument, NULL, OPT_ENDPOINT },
	{ "region", required_argument, NULL, OPT_REGION },
	{ "profile", required_argument, NULL, OPT_PROFILE },
	{ "addressing", required_argument, NULL, OPT_ADDRESSING },
	{ "no-sign-request", no_argument, NULL, OPT_NO_SIGN },
	{ "allow-outside-symlinks", no_argument, NULL, OPT_ALLOW_OUTSIDE_SYMLINKS },
	{ "shared-cache", required_argument, NULL, OPT_SHARED_CACHE },
	{ "shared-endpoint", required_argument, NULL, OPT_SHARED_ENDPOINT },
	{ "shared-region", required_argument, NULL, OPT_SHARED_REGION },
	{ "shared-profile", required_argument, NULL, OPT_SHARED_PROFILE },
	{ "shared-write-memory", required_argument, NULL, OPT_SHARED_WRITE_MEMORY },
	{ "metrics-addr", required_argument, NULL, OPT_METRICS_ADDR },
	/* Tests only: TLS without verification. Not in --help on purpose. */
	{ "insecure", no_argument, NULL, OPT_INSECURE },
	{ "foreground", no_argument, NULL, 'f' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("ferry mount: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Whether the tier's objects (TIER_PREFIX ferry-v1/...) would show in the mount: an S3
 * source and a tier on the same endpoint (as given) and bucket, the tier's keys under the
 * source's prefix. */
static bool tier_inside_source(const struct ferryfs_config *cfg)
{
	char *sb = NULL, *sp = NULL, *tb = NULL, *tp = NULL, why[512];
	const char *se = cfg->remote.endpoint, *te = cfg->shared_endpoint;
	bool inside = false;

	if (strncmp(cfg->source, "s3://", 5) || (se && !te) || (!se && te) ||
		(se && te && strcmp(se, te)))
		return false;
	if (!tier_parse_url(cfg->source, &sb, &sp, why, sizeof(why)) &&
		!tier_parse_url(cfg->shared_cache, &tb, &tp, why, sizeof(why)) && !strcmp(sb, tb))
		inside = !strncmp(tp, sp, strlen(sp)) ||
			 (!*tp && !strncmp("ferry-v1/", sp, strlen(sp) < 9 ? strlen(sp) : 9));
	free(sb);
	free(sp);
	free(tb);
	free(tp);
	return inside;
}

static int check_mountpoint(const char *arg, char *canon)
{
	struct stat st;
	struct dirent *de;
	DIR *d;

	if (!realpath(arg, canon))
		return fail("mountpoint %s: %s", arg, strerror(errno));
	if (stat(canon, &st))
		return fail("mountpoint %s: %s", arg, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail("mountpoint %s is not a directory", arg);
	if (cli_is_mount_point(canon, NULL, 0))
		return fail("mountpoint %s is already a mount point (unmount it first)", arg);
	d = opendir(canon);
	if (!d)
		return fail("mountpoint %s: %s", arg, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			break;
	closedir(d);
	if (de)
		return fail("mountpoint %s is not empty", arg);
	return 0;
}

/* mkdir -p, then proves the directory writable by creating a file (access() lies to root
 * on read-only file systems). The cache root, when made here, is 0700 whatever the umask:
 * cached objects are the user's (private S3 data); parents made on the way are 0755. */
static int check_cache_dir(const char *dir)
{
	char path[PATH_MAX], *p;
	int fd;

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return fail("cache directory name too long");
	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) && errno != EEXIST)
			return fail("cannot create cache directory %s: %s", path, strerror(errno));
		*p = '/';
	}
	if (!mkdir(path, 0700))
		chmod(path, 0700);
	else if (errno != EEXIST)
		return fail("cannot create cache directory %s: %s", dir, strerror(errno));
	if (snprintf(path, sizeof(path), "%s/.ferry-write-test.XXXXXX", dir) >= (int)sizeof(path))
		return fail("cache directory name too long");
	fd = mkstemp(path);
	if (fd < 0)
		return fail("cache directory %s is not writable: %s", dir, strerror(errno));
	close(fd);
	unlink(path);
	return 0;
}

static int size_arg(const char *opt, const char *s, uint64_t *out)
{
	int ret = cli_parse_size(s, out);

	if (ret)
		return fail("%s '%s': %s (expected e.g. 512M, 50G, 2T)", opt, s,
			ret == -ERANGE ? "too large" : "not a size");
	return 0;
}

static int count_arg(const char *opt, const char *s, long lo, long hi, unsigned *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || end == s || v < lo || v > hi)
		return fail("%s '%s': expected %ld to %ld", opt, s, lo, hi);
	*out = (unsigned)v;
	return 0;
}

/* Appends -o options; "ro" is always set by the daemon and "rw" would contradict what the file
 * system is, so both are dropped rather than failing an fstab line. */
static int add_fuse_opts(char *buf, size_t len, const char *opts)
{
	char *copy = strdup(opts), *save = NULL, *tok;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ro") || !strcmp(tok, "rw"))
			continue;
		if (strlen(buf) + strlen(tok) + 2 > len) {
			ret = -E2BIG;
			break;
		}
		if (buf[0])
			strcat(buf, ",");
		strcat(buf, tok);
	}
	free(copy);
	return ret;
}

/* Runs in the forked child: becomes the daemon. Never returns. */
static void daemon_child(struct ferryfs_config *cfg, int wfd)
{
	int fd;

	setsid();
	if (chdir("/"))
		_exit(1);
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	signal(SIGPIPE, SIG_IGN);
	_exit(ferryfs_main(cfg, wfd) ? 1 : 0);
}

/* Waits for the daemon's last line: "ok", or the reason it could not mount. Lines before it
 * that start with "warning: " are the daemon's warnings for the user, who is watching this
 * terminal and not the syslog the daemon writes to. */
static int wait_ready(pid_t pid, int rfd)
{
	static const char warn[] = "warning: ";
	FILE *f = fdopen(rfd, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int status, ret;

	if (!f) {
		close(rfd);
		return fail("fdopen: %s", strerror(errno));
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, warn, sizeof(warn) - 1))
			break;
		fprintf(stderr, "ferry mount: %s\n", line);
	}
	fclose(f);
	if (n > 0 && !strcmp(line, "ok")) {
		free(line);
		return 0;
	}
	waitpid(pid, &status, 0);
	if (n <= 0)
		ret = fail("the daemon exited before mounting (see syslog)");
	else
		ret = fail("%s", line);
	free(line);
	return ret;
}

int mount_main(int argc, char **argv)
{
	struct ferryfs_config cfg = {
		.cache_dir = DEFAULT_CACHE_DIR,
		.metadata_ttl_s = 3600,
		.dir_readahead = 32,
	};
	char mp[PATH_MAX], src[PATH_MAX], cache_dir[PATH_MAX], fuse_opts[4096] = "", err[512];
	/* The source with its query, kept as long as the process lives (the daemon uses it):
	 * static, so it stays reachable on every return path. */
	static char *source_copy;
	uint64_t chunk = 8u << 20;
	int c, pfd[2];
	pid_t pid;

	optind = 1;
	opterr = 0; /* getopt's message plus a hint would be two lines: say it in one */
	while ((c = getopt_long(argc, argv, ":o:fvh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_CACHE_DIR:
			cfg.cache_dir = optarg;
			break;
		case OPT_CACHE_SIZE:
			if (size_arg("--cache-size", optarg, &cfg.cache_bytes))
				return 1;
			if (!cfg.cache_bytes)
				return fail("--cache-size must be more than 0");
			break;
		case OPT_CHUNK_SIZE:
			if (size_arg("--chunk-size", optarg, &chunk))
				return 1;
			if (chunk < (64u << 10) || chunk > (64u << 20) || (chunk & (chunk - 1)))
				return fail(
					"--chunk-size '%s': must be a power of two from 64K to 64M",
					optarg);
			break;
		case OPT_CA_FILE:
			if (access(optarg, R_OK))
				return fail("--ca-file %s: %s", optarg, strerror(errno));
			cfg.remote.ca_file = optarg;
			break;
		case OPT_TTL:
			if (cli_parse_duration(optarg, &cfg.metadata_ttl_s))
				return fail(
					"--metadata-ttl '%s': not a duration (e.g. 90s, 30m, 1h, never)",
					optarg);
			break;
		case OPT_MAX_TRANSFERS:
			if (count_arg("--max-transfers", optarg, 1, 1024, &cfg.max_transfers))
				return 1;
			break;
		case OPT_STALL_TIMEOUT: {
			double secs;

			if (cli_parse_duration(optarg, &secs) || secs < 1 || secs > 86400)
				return fail(
					"--stall-timeout '%s': a duration from 1s to 1d (e.g. 10s)",
					optarg);
			cfg.remote.low_speed_time_s = (long)secs;
			break;
		}
		case OPT_DIR_READAHEAD:
			if (count_arg("--dir-readahead", optarg, 0, 4096, &cfg.dir_readahead))
				return 1;
			break;
		case OPT_ENDPOINT:
			cfg.remote.endpoint = optarg;
			break;
		case OPT_REGION:
			cfg.remote.region = optarg;
			break;
		case OPT_PROFILE:
			cfg.remote.profile = optarg;
			break;
		case OPT_ADDRESSING:
			if (strcmp(optarg, "path") && strcmp(optarg, "virtual") &&
				strcmp(optarg, "auto"))
				return fail("--addressing '%s': expected path, virtual or auto",
					optarg);
			cfg.remote.addressing = optarg;
			break;
		case OPT_NO_SIGN:
			cfg.remote.no_sign_request = true;
			break;
		case OPT_INSECURE:
			cfg.remote.insecure = true;
			break;
		case OPT_ALLOW_OUTSIDE_SYMLINKS:
			cfg.allow_outside_symlinks = true;
			break;
		case OPT_SHARED_CACHE: {
			char *bucket, *prefix, why[512];

			/* the same check as the daemon's, before anything is forked */
			if (tier_parse_url(optarg, &bucket, &prefix, why, sizeof(why)))
				return fail("%s", why);
			free(bucket);
			free(prefix);
			cfg.shared_cache = optarg;
			break;
		}
		case OPT_SHARED_ENDPOINT:
			cfg.shared_endpoint = optarg;
			break;
		case OPT_SHARED_REGION:
			cfg.shared_region = optarg;
			break;
		case OPT_SHARED_PROFILE:
			cfg.shared_profile = optarg;
			break;
		case OPT_SHARED_WRITE_MEMORY:
			if (size_arg("--shared-write-memory", optarg, &cfg.shared_write_memory))
				return 1;
			if (cfg.shared_write_memory < (1ull << 20) ||
				cfg.shared_write_memory > (64ull << 30))
				return fail("--shared-write-memory '%s': expected 1M to 64G",
					optarg);
			break;
		case OPT_METRICS_ADDR:
			/* The form here; whether it can be bound, in the daemon before it mounts. */
			if (metrics_check_addr(optarg, err, sizeof(err)))
				return fail("%s", err);
			cfg.metrics_addr = optarg;
			break;
		case 'o':
			if (add_fuse_opts(fuse_opts, sizeof(fuse_opts), optarg))
				return fail("-o: options too long");
			break;
		case 'f':
			cfg.foreground = true;
			break;
		case 'v':
			cfg.verbose++;
			cfg.remote.verbose = cfg.verbose;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return fail("option '%s' needs a value (try 'ferry mount --help')",
				argv[optind - 1]);
		default:
			if (optopt > 0 && optopt < 256) /* a short one, maybe inside "-xf" */
				return fail("unknown option '-%c' (try 'ferry mount --help')",
					optopt);
			return fail("unknown option '%s' (try 'ferry mount --help')",
				argv[optind - 1]);
		}
	}
	/* Bad input is one line; the full text is for --help. */
	if (argc - optind < 2)
		return fail("expected SOURCE and MOUNTPOINT (try 'ferry mount --help')");
	if (argc - optind > 2)
		return fail("unexpected argument '%s' (try 'ferry mount --help')",
			argv[optind + 2]);
	cfg.chunk_bytes = (uint32_t)chunk;
	if (cfg.cache_bytes && cfg.cache_bytes < chunk)
		return fail("--cache-size is smaller than one chunk (%llu bytes)",
			(unsigned long long)chunk);
	if (fuse_opts[0])
		cfg.fuse_options = fuse_opts;

	cfg.source = argv[optind];
	if (!remote_ops_for(cfg.source, err, sizeof(err)))
		return fail("%s", err);
	/* The daemon is this process or its child: its /proc/PID/cmdline, readable by every
	 * local user, is this argv. Keep the URL for the requests, scrub its query there. */
	if (strchr(cfg.source, '?')) {
		free(source_copy); /* a second mount_main in one process (tests) */
		source_copy = strdup(cfg.source);
		if (!source_copy)
			return fail("out of memory");
		url_redact_in_place(argv[optind]);
		cfg.source = source_copy;
	}
	/* The daemon runs from /: a local source must be absolute. */
	if (!strstr(cfg.source, "://")) {
		if (!realpath(cfg.source, src))
			return fail("source %s: %s", cfg.source, strerror(errno));
		cfg.source = src;
	}
	if (cfg.shared_cache && tier_inside_source(&cfg))
		return fail("the shared cache %s lies inside the source %s: the mount would list "
			    "its own chunks",
			cfg.shared_cache, cfg.source);
	if (check_mountpoint(argv[optind + 1], mp))
		return 1;
	cfg.mountpoint = mp;
	/* Before creating anything: a cache inside the mount would feed on itself. */
	if (cfg.cache_dir[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)) ||
			snprintf(cache_dir, sizeof(cache_dir), "%s/%s", cwd, cfg.cache_dir) >=
				(int)sizeof(cache_dir))
			return fail("cache directory %s: path too long", cfg.cache_dir);
	} else {
		snprintf(cache_dir, sizeof(cache_dir), "%s", cfg.cache_dir);
	}
	if (!strncmp(cache_dir, mp, strlen(mp)) &&
		(cache_dir[strlen(mp)] == '/' || !cache_dir[strlen(mp)]))
		return fail("the cache directory cannot be inside the mountpoint");
	if (check_cache_dir(cfg.cache_dir))
		return 1;
	if (!realpath(cfg.cache_dir, cache_dir))
		return fail("cache directory %s: %s", cfg.cache_dir, strerror(errno));
	cfg.cache_dir = cache_dir;

	if (cfg.foreground)
		return ferryfs_main(&cfg, -1) ? 1 : 0;

	if (pipe2(pfd, O_CLOEXEC))
		return fail("pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		daemon_child(&cfg, pfd[1]);
	}
	close(pfd[1]);
	return wait_ready(pid, pfd[0]);
}
