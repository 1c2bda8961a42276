/* `ferry umount`, `ferry stat`, `ferry warm` and `ferry manifest`: small commands that talk
 * to a mount through its control xattrs and ioctl (fs/ferry_ctl.h), or write a manifest. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"
#include "fs/manifest.h"
#include "fs/url.h"
#include "mount/cli.h"
#include "mount/cmd.h"

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	}
	return false;
}

/* Reads the stats JSON of a ferry mount; -errno. */
static int read_stats(const char *mp, char *buf, size_t len)
{
	ssize_t n = getxattr(mp, FERRY_XATTR_STATS, buf, len - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* The number under "key" in our flat JSON object; 0 when absent. */
static double json_num(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	return p ? strtod(p + strlen(pat), NULL) : 0;
}

/* ---- umount ---- */

/* Runs fusermount3 -u [-z] on mp, its own messages silenced when quiet; true when it
 * unmounted. */
static bool run_fusermount(const char *mp, bool lazy, bool quiet)
{
	pid_t child = fork();
	int status;

	if (child < 0) {
		fprintf(stderr, "ferry umount: fork: %s\n", strerror(errno));
		return false;
	}
	if (child == 0) {
		if (quiet) {
			int fd = open("/dev/null", O_WRONLY);

			if (fd >= 0)
				dup2(fd, 2);
		}
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", mp, (char *)NULL);
		fprintf(stderr, "ferry umount: cannot run fusermount3: %s\n", strerror(errno));
		_exit(127);
	}
	return waitpid(child, &status, 0) == child && WIFEXITED(status) && !WEXITSTATUS(status);
}

int umount_main(int argc, char **argv)
{
	char mp[PATH_MAX], fstype[64] = "", json[4096];
	const char *path = NULL;
	bool force = false;
	pid_t pid = 0;

	if (wants_help(argc, argv)) {
		printf("usage: ferry umount [--force] MOUNTPOINT\n\n"
		       "Unmounts a ferry mount (fusermount3 -u) and waits until its daemon has\n"
		       "written its cache maps and exited. Fails if files on it are in use, unless\n"
		       "--force: then the mount is detached at once (no new opens), reads in\n"
		       "progress, even ones waiting on a stalled server, fail with EIO, files still\n"
		       "open get ENOTCONN, and the daemon writes its maps and exits.\n");
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--force")) {
			force = true;
		} else if (argv[i][0] == '-' || path) {
			path = NULL; /* an unknown option, or a second mount point */
			break;
		} else {
			path = argv[i];
		}
	}
	if (!path) {
		fprintf(stderr, "usage: ferry umount [--force] MOUNTPOINT\n");
		return 1;
	}
	if (!realpath(path, mp)) {
		fprintf(stderr, "ferry umount: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (!cli_is_mount_point(mp, fstype, sizeof(fstype)) || strcmp(fstype, "fuse.ferry")) {
		fprintf(stderr, "ferry umount: %s is not a ferry mount\n", path);
		return 1;
	}
	if (!read_stats(mp, json, sizeof(json)))
		pid = (pid_t)json_num(json, "pid");
	if (!run_fusermount(mp, false, force)) {
		if (!force) {
			fprintf(stderr, "ferry umount: could not unmount %s (files in use? "
					"--force fails their reads and stops the daemon)\n", path);
			return 1;
		}
		/* Detached first, so nothing new opens; then the daemon fails what waits. */
		if (!run_fusermount(mp, true, false)) {
			fprintf(stderr, "ferry umount: could not detach %s\n", path);
			return 1;
		}
		if (pid > 0 && kill(pid, SIGTERM) < 0 && errno != ESRCH)
			fprintf(stderr, "ferry umount: cannot stop the daemon (pid %d): %s\n",
				(int)pid, strerror(errno));
	}
	/* The daemon flushes its maps after the kernel lets go; wait for it (up to a minute). */
	for (int i = 0; pid > 0 && i < 600 && kill(pid, 0) == 0; i++) {
		struct timespec t = { 0, 100 * 1000 * 1000 };
		char statp[64], state = 0;
		FILE *f;

		/* A zombie (when ferry mount -f was run from our own shell) is gone for us. */
		snprintf(statp, sizeof(statp), "/proc/%d/stat", (int)pid);
		f = fopen(statp, "re");
		if (f) {
			if (fscanf(f, "%*d %*s %c", &state) != 1)
				state = 0;
			fclose(f);
		}
		if (state == 'Z')
			break;
		nanosleep(&t, NULL);
	}
	return 0;
}

/* ---- stat ---- */

int stat_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char json[4096], src[4096] = "", *shown;
	bool as_json = false;
	ssize_t n;
	int c, ret;

	optind = 1;
	argv[0] = "ferry stat";
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j') {
			as_json = true;
		} else if (c == 'h') {
			printf("usage: ferry stat [--json] MOUNTPOINT\n\n"
			       "Prints the cache and fetch counters of a ferry mount: cache used and\n"
			       "limit, hits, misses, hit rate, bytes fetched, fetch throughput, errors.\n"
			       "--json prints the daemon's JSON object (docs/ferry.md) instead.\n");
			return 0;
		} else {
			return 1;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "usage: ferry stat [--json] MOUNTPOINT\n");
		return 1;
	}
	ret = read_stats(argv[optind], json, sizeof(json));
	if (ret) {
		if (ret == -ENODATA || ret == -ENOTSUP || ret == -EOPNOTSUPP)
			fprintf(stderr, "ferry stat: %s is not the root of a ferry mount\n",
				argv[optind]);
		else
			fprintf(stderr, "ferry stat: %s: %s\n", argv[optind], strerror(-ret));
		return 1;
	}
	if (as_json) {
		fputs(json, stdout);
		return 0;
	}
	n = getxattr(argv[optind], FERRY_XATTR_SOURCE, src, sizeof(src) - 1);
	src[n > 0 ? n : 0] = '\0';
	/* The daemon shows its source redacted; a daemon from before that did not. */
	shown = url_redact(src);
	cli_print_stats(stdout, json, shown ? shown : "");
	free(shown);
	return 0;
}

/* ---- warm ---- */

/* Residency is asked for in pieces, so one file larger than the cache still warms (the
 * pieces evict each other as they must) and progress moves. */
#define WARM_STEP_BYTES (256ull << 20)

static struct {
	uint64_t total_bytes, done_bytes;
	uint64_t nr_files, nr_errors;
	bool tty, counting;
	struct timespec start, last_draw;
} warm;

static void warm_draw(bool final)
{
	struct timespec now;
	double el, frac;
	char a[32], b[32], r[32];
	int width = 30, fill;

	if (!warm.tty)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final && (now.tv_sec - warm.last_draw.tv_sec) * 1000000000L +
			      (now.tv_nsec - warm.last_draw.tv_nsec) < 100000000L)
		return;
	warm.last_draw = now;
	el = (double)(now.tv_sec - warm.start.tv_sec) + (now.tv_nsec - warm.start.tv_nsec) / 1e9;
	frac = warm.total_bytes ? (double)warm.done_bytes / (double)warm.total_bytes : 1;
	fill = (int)(frac * width);
	cli_format_bytes(warm.done_bytes, a, sizeof(a));
	cli_format_bytes(warm.total_bytes, b, sizeof(b));
	cli_format_bytes(el > 0 ? (uint64_t)((double)warm.done_bytes / el) : 0, r, sizeof(r));
	fprintf(stderr, "\r[%.*s%*s] %3.0f%%  %s / %s  %s/s ", fill,
		"==============================", width - fill, "", frac * 100, a, b, r);
	if (final)
		fputc('\n', stderr);
	fflush(stderr);
}

static int warm_file(const char *path, const struct stat *st)
{
	struct ferry_resident r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t off = 0;

	if (fd < 0) {
		fprintf(stderr, "%sferry warm: %s: %s\n", warm.tty ? "\n" : "", path,
			strerror(errno));
		return -errno;
	}
	do {
		memset(&r, 0, sizeof(r));
		r.offset = off;
		r.length = WARM_STEP_BYTES;
		r.hold_ms = 1; /* warming needs no pin */
		if (ioctl(fd, FERRY_IOC_RESIDENT, &r) < 0) {
			int e = errno;

			fprintf(stderr, "%sferry warm: %s: %s\n", warm.tty ? "\n" : "", path,
				e == ENOTTY || e == EINVAL || e == ENOSYS ?
					"not on a ferry mount" : strerror(e));
			close(fd);
			return -e;
		}
		off += WARM_STEP_BYTES;
		warm.done_bytes += off > r.file_size ? r.file_size - (off - WARM_STEP_BYTES) :
						       WARM_STEP_BYTES;
		warm_draw(false);
	} while (off < r.file_size);
	close(fd);
	return 0;
}

static int warm_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (warm.counting) {
		warm.total_bytes += (uint64_t)st->st_size;
		return 0;
	}
	warm.nr_files++;
	if (warm_file(path, st))
		warm.nr_errors++;
	return 0;
}

int warm_main(int argc, char **argv)
{
	char a[32];

	if (wants_help(argc, argv)) {
		printf("usage: ferry warm PATH...\n\n"
		       "Fetches every file under each PATH (files or directories on a ferry mount)\n"
		       "into the cache ahead of use, with a progress bar on a terminal.\n");
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: ferry warm PATH...\n");
		return 1;
	}
	warm.tty = isatty(STDERR_FILENO);
	warm.counting = true;
	for (int i = 1; i < argc; i++) {
		if (nftw(argv[i], warm_visit, 32, FTW_PHYS)) {
			fprintf(stderr, "ferry warm: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
	}
	warm.counting = false;
	clock_gettime(CLOCK_MONOTONIC, &warm.start);
	for (int i = 1; i < argc; i++)
		nftw(argv[i], warm_visit, 32, FTW_PHYS);
	warm_draw(true);
	cli_format_bytes(warm.done_bytes, a, sizeof(a));
	if (warm.nr_errors) {
		fprintf(stderr, "ferry warm: %llu of %llu files failed\n",
			(unsigned long long)warm.nr_errors, (unsigned long long)warm.nr_files);
		return 1;
	}
	if (!warm.tty)
		fprintf(stderr, "ferry warm: %llu files, %s resident\n",
			(unsigned long long)warm.nr_files, a);
	return 0;
}

/* ---- manifest ---- */

int manifest_main(int argc, char **argv)
{
	char path[PATH_MAX], tmp[PATH_MAX], err[512] = "";
	struct stat st;
	char *text = NULL;
	size_t text_len = 0;
	FILE *f;
	int fd, ret;

	if (wants_help(argc, argv)) {
		printf("usage: ferry manifest DIR\n\n"
		       "Writes DIR/%s listing every file, directory and symlink under DIR with\n"
		       "its size, mtime and ETag, so that serving DIR over HTTP lets ferry mount it\n"
		       "with one request. The file is replaced atomically. Format: docs/ferry.md.\n",
			MANIFEST_NAME);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: ferry manifest DIR\n");
		return 1;
	}
	if (stat(argv[1], &st) || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "ferry manifest: %s: %s\n", argv[1],
			errno && !S_ISDIR(st.st_mode) ? strerror(errno) : "not a directory");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/%s", argv[1], MANIFEST_NAME);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp.XXXXXX", argv[1], MANIFEST_NAME);
	/* Walk into memory first: a temporary file in DIR would list itself. */
	f = open_memstream(&text, &text_len);
	if (!f) {
		fprintf(stderr, "ferry manifest: %s\n", strerror(errno));
		return 1;
	}
	ret = manifest_write_tree(argv[1], f, err, sizeof(err));
	if (fclose(f) && !ret)
		ret = -EIO;
	if (ret) {
		free(text);
		fprintf(stderr, "ferry manifest: %s\n", err[0] ? err : strerror(-ret));
		return 1;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		free(text);
		fprintf(stderr, "ferry manifest: cannot write in %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fchmod(fd, 0644);
	for (size_t done = 0; !ret && done < text_len;) {
		ssize_t n = write(fd, text + done, text_len - done);

		if (n < 0 && errno != EINTR)
			ret = -errno;
		else if (n > 0)
			done += (size_t)n;
	}
	free(text);
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret) {
		unlink(tmp);
		fprintf(stderr, "ferry manifest: %s\n", err[0] ? err : strerror(-ret));
		return 1;
	}
	return 0;
}
