/* `ferry umount`, `ferry stat`, `ferry warm` and `ferry manifest`: small commands that talk
 * to a mount through its control xattrs and ioctl (fs/ferry_ctl.h), or write a manifest. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/ferry_ctl.h"
#include "fs/manifest.h"
#include "fs/remote/url.h"
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

/* Whether errno e says the mount's FUSE connection is gone: its daemon died (or the
 * connection was aborted through /sys/fs/fuse/connections). */
static bool daemon_gone(int e)
{
	return e == ENOTCONN || e == ECONNABORTED;
}

/* The mount holding path, by name alone (path cannot be stat'ed when the daemon died); the
 * mount point goes to m. */
static bool mount_containing(const char *path, struct cli_mount *m)
{
	char cwd[PATH_MAX], abs[PATH_MAX];
	FILE *f;
	bool found;

	if (!getcwd(cwd, sizeof(cwd)) || cli_lexical_abspath(cwd, path, abs, sizeof(abs)))
		return false;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	found = cli_mount_containing(f, abs, m);
	fclose(f);
	return found;
}

/* The one line for path on a mount whose daemon is gone (errno e): what happened and what
 * clears it, when path is on a ferry mount; else the error itself. */
static void say_daemon_gone(const char *cmd, const char *path, int e)
{
	struct cli_mount *m = malloc(sizeof(*m));
	char quoted[2 * PATH_MAX];

	if (!m || !mount_containing(path, m) || strcmp(m->fstype, "fuse.ferry")) {
		fprintf(stderr, "ferry %s: %s: %s\n", cmd, path, strerror(e));
		free(m);
		return;
	}
	cli_shell_quote(m->mount_point, quoted, sizeof(quoted));
	/* Not strerror(e): "Software caused connection abort" (for requests in flight when it
	 * died) says nothing to a user; ENOTCONN's text is what they would search for. */
	fprintf(stderr,
		"ferry %s: the daemon of the ferry mount at %s is gone (%s); "
		"`ferry umount %s` clears the mount\n",
		cmd, m->mount_point, strerror(ENOTCONN), quoted);
	free(m);
}

/* ---- umount ---- */

/* Whether pid may be signalled as the daemon of the mount at mp. Its pid comes from the
 * mount's own stats, and anyone can mount a FUSE file system that calls itself ferry and names
 * any pid: the process must belong to the mount's owner (user_id= in mountinfo) and hold
 * /dev/fuse open, so a false one can only name its owner's own FUSE servers. */
static bool pid_serves_mount(pid_t pid, const char *mp)
{
	char path[64], link[64], *line = NULL;
	long owner = -1, uid = -2;
	size_t cap = 0;
	bool fuse = false;
	struct dirent *d;
	FILE *f;
	DIR *dir;

	f = fopen("/proc/self/mountinfo", "re");
	while (f && getline(&line, &cap, f) > 0) {
		/* id parent maj:min root mountpoint options ... - fstype source superoptions */
		char *save = NULL, *field[5], *dash = strstr(line, " - "), *opt;
		int i;

		for (i = 0; i < 5 && (field[i] = strtok_r(i ? NULL : line, " ", &save)); i++)
			;
		if (i < 5 || !dash)
			continue;
		cli_mountinfo_unescape(field[4]);
		/* the last match is the top mount */
		if (!strcmp(field[4], mp))
			owner = (opt = strstr(dash, "user_id=")) ? strtol(opt + 8, NULL, 10) : -1;
	}
	free(line);
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	line = NULL;
	while (f && getline(&line, &cap, f) > 0)
		if (!strncmp(line, "Uid:", 4))
			uid = strtol(line + 4, NULL, 10);
	free(line);
	if (f)
		fclose(f);
	if (owner < 0 || uid != owner)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	while (dir && !fuse && (d = readdir(dir))) {
		char fd_path[320];
		ssize_t n;

		snprintf(fd_path, sizeof(fd_path), "%s/%s", path, d->d_name);
		n = readlink(fd_path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			fuse = !strcmp(link, "/dev/fuse");
		}
	}
	if (dir)
		closedir(dir);
	return fuse;
}

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

/* mp (size len) := the mount point that path names by its text (path itself, cleaned),
 * when that is a mount point; -ENOENT when it is not. */
static int umount_find_dead(const char *path, char *mp, size_t len)
{
	char cwd[PATH_MAX];

	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	if (cli_lexical_abspath(cwd, path, mp, len))
		return -ENAMETOOLONG;
	return cli_is_mount_point(mp, NULL, 0) ? 0 : -ENOENT;
}

/* Unmounts a mount whose daemon is gone: nothing is left to flush and nobody to wait for,
 * and files still open on it (which fail with ENOTCONN whatever happens) would make a plain
 * unmount fail with EBUSY, so it is detached (fusermount3 -uz). */
static int umount_dead(const char *mp, const char *path)
{
	if (!run_fusermount(mp, true, false)) {
		fprintf(stderr, "ferry umount: could not detach %s, whose daemon is gone\n", path);
		return 1;
	}
	return 0;
}

int umount_main(int argc, char **argv)
{
	char mp[PATH_MAX], fstype[64] = "", json[4096];
	const char *path = NULL;
	bool force = false, dead = false;
	pid_t pid = 0;
	bool trusted;
	int ret;

	if (wants_help(argc, argv)) {
		printf("usage: ferry umount [--force] MOUNTPOINT\n\n"
		       "Unmounts a ferry mount (fusermount3 -u) and waits until its daemon has\n"
		       "written its cache maps and exited. Fails if files on it are in use, unless\n"
		       "--force: then the mount is detached at once (no new opens), reads in\n"
		       "progress, even ones waiting on a stalled server, fail with EIO, files still\n"
		       "open get ENOTCONN, and the daemon writes its maps and exits. A mount whose\n"
		       "daemon died is detached (fusermount3 -uz), with or without --force.\n");
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
		int e = errno;

		/* A dead mount cannot be stat'ed: it is found by its name alone. */
		if (!daemon_gone(e) || umount_find_dead(path, mp, sizeof(mp))) {
			fprintf(stderr, "ferry umount: %s: %s\n", path, strerror(e));
			return 1;
		}
		dead = true;
	}
	if (!cli_is_mount_point(mp, fstype, sizeof(fstype)) || strcmp(fstype, "fuse.ferry")) {
		fprintf(stderr, "ferry umount: %s is not a ferry mount\n", path);
		return 1;
	}
	ret = read_stats(mp, json, sizeof(json));
	if (!ret)
		pid = (pid_t)cli_json_num(json, "pid");
	else if (daemon_gone(-ret))
		dead = true;
	if (dead)
		return umount_dead(mp, path);
	/* Judged while the mount is still listed (a detached one leaves mountinfo). */
	trusted = force && pid > 0 && pid_serves_mount(pid, mp);
	if (!run_fusermount(mp, false, force)) {
		if (!force) {
			fprintf(stderr,
				"ferry umount: could not unmount %s (files in use? "
				"--force fails their reads and stops the daemon)\n",
				path);
			return 1;
		}
		/* Detached first, so nothing new opens; then the daemon fails what waits. */
		if (!run_fusermount(mp, true, false)) {
			fprintf(stderr, "ferry umount: could not detach %s\n", path);
			return 1;
		}
		if (pid > 0 && !trusted) {
			fprintf(stderr,
				"ferry umount: %s is detached; its daemon (pid %d by its own "
				"account) is not stopped: that process is not the mount's\n",
				path, (int)pid);
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
			       "--json prints the daemon's JSON object (docs/ferry.md) instead.\n"
			       "On a mount whose daemon died it says so, and that ferry umount clears it.\n");
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
		else if (daemon_gone(-ret))
			say_daemon_gone("stat", argv[optind], -ret);
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

/* Residency is asked for a few chunks at a time, by a few threads at once. A request holds
 * its thread until every chunk of it is fetched, whatever signal arrives (the daemon does not
 * act on FUSE interrupts, and the kernel waits out a request the daemon has taken), so small
 * requests are what lets Ctrl-C stop a warm within about one chunk's fetch; four of them in
 * flight keep 16 transfers busy (the default --max-transfers), as the single 256 MiB request
 * of before did, and leave the daemon's other FUSE threads (16) to readers. A file larger
 * than the cache still warms: the pieces evict each other as they must. */
#define WARM_WORKERS          4
#define WARM_PIECE_CHUNKS     4
#define WARM_PIECE_MIN_BYTES  (4ull << 20) /* with small chunks: fewer, larger requests */
#define WARM_DRAW_MS          250          /* the progress line is redrawn this often */
#define WARM_TIER_WAIT_S      60 /* for the shared tier's PUT queue to move while it drains */
#define WARM_TIER_POLL_MS     200
#define WARM_STOP_DAEMON_GONE (-1) /* struct warm's stop: the daemon died */
#define WARM_STOP_NO_ROOM     (-2) /* the cache could not store a chunk (ENOSPC) */

/* One regular file found by the walk. Under warm.lock. */
struct warm_file {
	char *path;
	uint64_t size_bytes;
	uint64_t piece_bytes;    /* the request size on this file's mount */
	uint64_t nr_pieces_left; /* requests not yet answered */
	bool failed;             /* its error was said; its other pieces are skipped */
};

/* A warm in progress. The walker thread appends files, the workers take their pieces in order
 * (files[next_file] from next_off on), and the main thread draws the progress line and waits
 * for signals (blocked in every thread, read from a signalfd) and for the workers' end (an
 * eventfd the last one writes). Everything below lock is protected by it. */
static struct {
	bool tty;    /* stderr is a terminal: draw the bar */
	int done_fd; /* eventfd, written when the last worker has left */
	struct timespec start;
	char **roots; /* the canonical PATHs to walk */
	uint64_t *root_piece_bytes;
	char **root_mounts;         /* the mount point of each root, for its stats */
	double *root_tier_dropped0; /* its tier_puts_dropped when the warm started */
	int nr_roots;

	pthread_mutex_t lock;
	pthread_cond_t more; /* files appended, the walk done, or stop set */
	struct warm_file *files;
	size_t nr_files, cap_files;
	size_t next_file;
	uint64_t next_off;
	uint64_t total_bytes, done_bytes;
	size_t nr_whole, nr_failed;
	unsigned int nr_workers_left;
	bool walk_done;
	bool bar_shown;  /* a progress line is on the terminal, not yet ended */
	int stop;        /* 0, a signal number, or WARM_STOP_DAEMON_GONE */
	char *gone_path; /* with WARM_STOP_DAEMON_GONE: a path on the dead mount, */
	int gone_errno;  /* and what it answered */
} warm = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.more = PTHREAD_COND_INITIALIZER,
	.done_fd = -1,
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static double warm_elapsed_s(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - warm.start.tv_sec) +
	       (double)(now.tv_nsec - warm.start.tv_nsec) / 1e9;
}

/* Draws the progress line over the last one; with warm.lock held. */
static void warm_draw_locked(void)
{
	char line[256];

	if (!warm.tty)
		return;
	cli_format_progress(line, sizeof(line), warm.done_bytes, warm.total_bytes, warm_elapsed_s(),
		!warm.walk_done);
	fprintf(stderr, "\r%s\033[K", line);
	fflush(stderr);
	warm.bar_shown = true;
}

/* Clears the progress line, so that a message starts a line of its own; with warm.lock held.
 * The next draw puts the line back under it. */
static void warm_clear_locked(void)
{
	if (warm.bar_shown)
		fputs("\r\033[K", stderr);
	warm.bar_shown = false;
}

/* Stops the warm (why: a signal number or WARM_STOP_DAEMON_GONE) unless already stopped;
 * with warm.lock held. */
static void warm_stop_locked(int why)
{
	if (!warm.stop)
		warm.stop = why;
	pthread_cond_broadcast(&warm.more);
}

/* Stops the warm because path answered that its daemon is gone (errno e); with warm.lock
 * held. */
static void warm_gone_locked(const char *path, int e)
{
	if (!warm.gone_path) {
		warm.gone_path = strdup(path);
		warm.gone_errno = e;
	}
	warm_stop_locked(WARM_STOP_DAEMON_GONE);
}

/* ---- the walk ---- */

static uint64_t walk_piece_bytes; /* the current root's; only the walker uses it */

static int warm_add_file(const char *path, uint64_t size_bytes)
{
	struct warm_file *f;
	char *copy = strdup(path);

	if (!copy)
		return -ENOMEM;
	pthread_mutex_lock(&warm.lock);
	if (warm.nr_files == warm.cap_files) {
		size_t cap = warm.cap_files ? 2 * warm.cap_files : 1024;
		struct warm_file *files = realloc(warm.files, cap * sizeof(*files));

		if (!files) {
			pthread_mutex_unlock(&warm.lock);
			free(copy);
			return -ENOMEM;
		}
		warm.files = files;
		warm.cap_files = cap;
	}
	f = &warm.files[warm.nr_files++];
	f->path = copy;
	f->size_bytes = size_bytes;
	f->piece_bytes = walk_piece_bytes;
	/* An empty file is still opened and asked for once: that is what says it is readable. */
	f->nr_pieces_left = size_bytes ? (size_bytes + walk_piece_bytes - 1) / walk_piece_bytes : 1;
	f->failed = false;
	warm.total_bytes += size_bytes;
	pthread_cond_broadcast(&warm.more);
	pthread_mutex_unlock(&warm.lock);
	return 0;
}

/* Says that path failed with errno e, on a line of its own under the progress line; with
 * warm.lock held. */
static void warm_say_locked(const char *path, int e)
{
	warm_clear_locked();
	fprintf(stderr, "ferry warm: %s: %s\n", path,
		e == ENOTTY || e == EINVAL || e == ENOSYS ? "not on a ferry mount" : strerror(e));
}

static int warm_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	int e = errno, ret = 0, stop;

	pthread_mutex_lock(&warm.lock);
	stop = warm.stop;
	pthread_mutex_unlock(&warm.lock);
	if (stop)
		return 1;
	if (type == FTW_NS || type == FTW_DNR) {
		pthread_mutex_lock(&warm.lock);
		if (daemon_gone(e)) {
			warm_gone_locked(path, e);
		} else {
			warm_say_locked(path, e);
			warm.nr_failed++;
		}
		pthread_mutex_unlock(&warm.lock);
		return 0;
	}
	if (type == FTW_F && S_ISREG(st->st_mode))
		ret = warm_add_file(path, (uint64_t)st->st_size);
	if (ret) {
		pthread_mutex_lock(&warm.lock);
		warm_say_locked(path, -ret);
		warm.nr_failed++;
		pthread_mutex_unlock(&warm.lock);
		return 1;
	}
	return 0;
}

/* The walker thread: every regular file under each root, staying on the root's mount. */
static void *warm_walk(void *arg)
{
	for (int i = 0; i < warm.nr_roots; i++) {
		walk_piece_bytes = warm.root_piece_bytes[i];
		if (nftw(warm.roots[i], warm_visit, 32, FTW_PHYS | FTW_MOUNT) < 0) {
			int e = errno;

			pthread_mutex_lock(&warm.lock);
			warm_say_locked(warm.roots[i], e);
			warm.nr_failed++;
			pthread_mutex_unlock(&warm.lock);
		}
	}
	pthread_mutex_lock(&warm.lock);
	warm.walk_done = true;
	pthread_cond_broadcast(&warm.more);
	pthread_mutex_unlock(&warm.lock);
	return NULL;
}

/* ---- the workers ---- */

struct warm_piece {
	size_t file;
	uint64_t off, len;
};

/* The next piece to ask for, waiting for the walk when it is ahead; false when there is
 * none left or the warm stopped. */
static bool warm_take_piece(struct warm_piece *p)
{
	bool got = false;

	pthread_mutex_lock(&warm.lock);
	for (;;) {
		struct warm_file *f;

		if (warm.stop)
			break;
		while (warm.next_file < warm.nr_files && warm.files[warm.next_file].failed) {
			warm.next_file++;
			warm.next_off = 0;
		}
		if (warm.next_file == warm.nr_files) {
			if (warm.walk_done)
				break;
			pthread_cond_wait(&warm.more, &warm.lock);
			continue;
		}
		f = &warm.files[warm.next_file];
		p->file = warm.next_file;
		p->off = warm.next_off;
		p->len = min_u64(f->size_bytes - p->off, f->piece_bytes);
		warm.next_off += f->piece_bytes;
		if (warm.next_off >= f->size_bytes) {
			warm.next_file++;
			warm.next_off = 0;
		}
		got = true;
		break;
	}
	pthread_mutex_unlock(&warm.lock);
	return got;
}

/* Makes [off, off + len) of the open file fd resident; 0 or -errno. r is scratch space (the
 * struct is 12 KiB with its block sums); r->file_size tells the size the daemon knows. */
static int warm_resident(int fd, struct ferry_resident *r, uint64_t off, uint64_t len)
{
	memset(r, 0, sizeof(*r));
	r->offset = off;
	r->length = len;
	r->hold_ms = 1; /* warming needs no pin */
	return ioctl(fd, FERRY_IOC_RESIDENT, r) < 0 ? -errno : 0;
}

/* Counts the answer (ret) to piece p, whose file the daemon knows as file_size bytes long. */
static void warm_account(const struct warm_piece *p, int ret, uint64_t file_size)
{
	struct warm_file *f;

	pthread_mutex_lock(&warm.lock);
	f = &warm.files[p->file];
	if (daemon_gone(-ret)) {
		warm_gone_locked(f->path, -ret);
	} else if (ret == -ENOSPC) {
		/* The cache's volume is full or failing (ferry stat says which): more requests
		 * would only fetch bytes nobody keeps. */
		warm_stop_locked(WARM_STOP_NO_ROOM);
	} else if (ret) {
		if (!f->failed && !warm.stop) {
			f->failed = true;
			warm.nr_failed++;
			warm_say_locked(f->path, -ret);
		}
	} else {
		warm.done_bytes += p->off < file_size ? min_u64(file_size - p->off, p->len) : 0;
		if (--f->nr_pieces_left == 0 && !f->failed)
			warm.nr_whole++;
	}
	pthread_mutex_unlock(&warm.lock);
}

/* A worker thread: asks for pieces until none is left, keeping its current file open. arg is
 * its own struct ferry_resident. */
static void *warm_work(void *arg)
{
	struct ferry_resident *r = arg;
	size_t open_file = SIZE_MAX;
	struct warm_piece p;
	uint64_t one = 1;
	int fd = -1;

	while (warm_take_piece(&p)) {
		int ret;

		if (p.file != open_file) {
			char *path;

			if (fd >= 0)
				close(fd);
			pthread_mutex_lock(&warm.lock);
			/* The array may move as the walk grows it; the string does not. */
			path = warm.files[p.file].path;
			pthread_mutex_unlock(&warm.lock);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				fd = -errno;
			open_file = p.file;
		}
		ret = fd < 0 ? fd : warm_resident(fd, r, p.off, p.len);
		warm_account(&p, ret, ret ? 0 : r->file_size);
	}
	if (fd >= 0)
		close(fd);
	pthread_mutex_lock(&warm.lock);
	/* The last one wakes the main thread now rather than at its next tick, at which it
	 * would see nr_workers_left 0 anyway: so a failed write (it cannot: the eventfd's
	 * counter cannot overflow) costs a tick, nothing more. */
	if (--warm.nr_workers_left == 0 && write(warm.done_fd, &one, sizeof(one)) < 0) {
	}
	pthread_mutex_unlock(&warm.lock);
	return NULL;
}

/* ---- the command ---- */

/* Checks one PATH argument before anything starts: it exists and is on a live ferry mount.
 * Sets the canonical path to walk and the request size for its mount; 0, or -errno with the
 * one line said. */
static int warm_check_root(const char *path, char **canon, uint64_t *piece_bytes,
	char **mount_point, double *tier_dropped0)
{
	struct cli_mount *m = NULL;
	uint64_t chunk_bytes = 8u << 20;
	char json[4096];
	struct stat st;
	int ret = 0;
	FILE *f;

	if (stat(path, &st)) {
		ret = -errno;
		if (daemon_gone(-ret))
			say_daemon_gone("warm", path, -ret);
		else
			fprintf(stderr, "ferry warm: %s: %s\n", path, strerror(-ret));
		return ret;
	}
	m = malloc(sizeof(*m));
	f = fopen("/proc/self/mountinfo", "re");
	if (!m || !f) {
		ret = -errno;
		fprintf(stderr, "ferry warm: cannot read the mount table: %s\n", strerror(-ret));
		goto out;
	}
	if (!cli_mount_of_dev(f, major(st.st_dev), minor(st.st_dev), m) ||
		strcmp(m->fstype, "fuse.ferry")) {
		fprintf(stderr, "ferry warm: %s is not on a ferry mount\n", path);
		ret = -EINVAL;
		goto out;
	}
	/* The daemon's chunk size sets the request size; a bind mount of a subdirectory has no
	 * stats at its root, and gets the default's. */
	ret = read_stats(m->mount_point, json, sizeof(json));
	if (daemon_gone(-ret)) {
		say_daemon_gone("warm", path, -ret);
		goto out;
	}
	if (!ret && cli_json_num(json, "chunk_bytes") > 0)
		chunk_bytes = (uint64_t)cli_json_num(json, "chunk_bytes");
	if (!ret && cli_json_num(json, "tier_puts_dropped") > 0)
		*tier_dropped0 = cli_json_num(json, "tier_puts_dropped");
	*mount_point = strdup(m->mount_point);
	*piece_bytes = WARM_PIECE_CHUNKS * chunk_bytes;
	if (*piece_bytes < WARM_PIECE_MIN_BYTES)
		*piece_bytes = (WARM_PIECE_MIN_BYTES + chunk_bytes - 1) / chunk_bytes * chunk_bytes;
	*canon = realpath(path, NULL);
	ret = *canon ? 0 : -errno;
	if (ret)
		fprintf(stderr, "ferry warm: %s: %s\n", path, strerror(-ret));
out:
	if (f)
		fclose(f);
	free(m);
	return ret;
}

/* Starts the walker and the workers, which inherit the blocked SIGINT and SIGTERM (the
 * signalfd the main thread reads gets them); how many workers started goes to nr_started.
 * -errno when the walker or no worker could start. */
static int warm_start(pthread_t *walker, pthread_t *workers, struct ferry_resident *bufs,
	int *nr_started)
{
	int ret;

	*nr_started = 0;
	warm.nr_workers_left = WARM_WORKERS;
	ret = -pthread_create(walker, NULL, warm_walk, NULL);
	if (ret)
		return ret;
	for (int i = 0; i < WARM_WORKERS; i++) {
		if (pthread_create(&workers[i], NULL, warm_work, &bufs[i]))
			break;
		(*nr_started)++;
	}
	pthread_mutex_lock(&warm.lock);
	warm.nr_workers_left -= WARM_WORKERS - *nr_started; /* those that started do the job */
	if (!*nr_started)
		warm_stop_locked(SIGTERM); /* the walker's cue to end */
	pthread_mutex_unlock(&warm.lock);
	if (!*nr_started) {
		pthread_join(*walker, NULL);
		return -EAGAIN;
	}
	return 0;
}

/* The main thread while the others work: redraws the progress line every WARM_DRAW_MS and
 * turns a signal into a stop, until the last worker has left. */
static void warm_watch(int sig_fd)
{
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = sig_fd, .events = POLLIN },
			{ .fd = warm.done_fd, .events = POLLIN },
		};
		struct signalfd_siginfo si;
		bool done;

		poll(p, 2, WARM_DRAW_MS);
		pthread_mutex_lock(&warm.lock);
		if ((p[0].revents & POLLIN) && read(sig_fd, &si, sizeof(si)) == sizeof(si))
			warm_stop_locked((int)si.ssi_signo);
		done = warm.nr_workers_left == 0;
		if (!done && !warm.stop)
			warm_draw_locked();
		pthread_mutex_unlock(&warm.lock);
		if (done)
			return;
	}
}

/* The last words of a warm, and its exit status. */
static int warm_report(void)
{
	char a[32], b[32];

	cli_format_bytes(warm.done_bytes, a, sizeof(a));
	cli_format_bytes(warm.total_bytes, b, sizeof(b));
	if (warm.stop == WARM_STOP_DAEMON_GONE) {
		warm_clear_locked();
		say_daemon_gone("warm", warm.gone_path ? warm.gone_path : warm.roots[0],
			warm.gone_errno ? warm.gone_errno : ENOTCONN);
		return 1;
	}
	if (warm.stop == WARM_STOP_NO_ROOM) {
		warm_clear_locked();
		fprintf(stderr,
			"ferry warm: the cache has no room for more (its volume is full or "
			"failing: see ferry stat): %s of %s%s warmed, %zu of %zu%s files whole\n",
			a, b, warm.walk_done ? "" : "+", warm.nr_whole, warm.nr_files,
			warm.walk_done ? "" : "+");
		return 1;
	}
	if (warm.stop) {
		warm_clear_locked();
		fprintf(stderr,
			"ferry warm: stopped by %s: %s of %s%s warmed, %zu of %zu%s files "
			"whole\n",
			warm.stop == SIGINT    ? "SIGINT"
			: warm.stop == SIGTERM ? "SIGTERM"
					       : "a signal",
			a, b, warm.walk_done ? "" : "+", warm.nr_whole, warm.nr_files,
			warm.walk_done ? "" : "+");
		/* As a shell reports a command a signal ended: 130 for SIGINT, 143 for SIGTERM. */
		return 128 + warm.stop;
	}
	if (warm.tty) {
		warm_draw_locked();
		fputc('\n', stderr);
	}
	if (warm.nr_failed) {
		fprintf(stderr, "ferry warm: %zu of %zu files failed\n", warm.nr_failed,
			warm.nr_files);
		return 1;
	}
	if (!warm.tty)
		fprintf(stderr, "ferry warm: %zu files, %s resident\n", warm.nr_files, a);
	return 0;
}

/* "warm fills the shared tier": what it read is in the tier once the mounts' PUT queues are
 * empty. Waits for that as long as the queue gets shorter (a large warm leaves many chunks
 * waiting by name: minutes of PUTs), giving up after WARM_TIER_WAIT_S without progress (a
 * signal stops the wait), then says how many tier writes the mounts dropped while it ran. 0,
 * or the exit status of a stop. */
static int warm_tier_drain(int sig_fd)
{
	struct timespec t0, now;
	bool said = false;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < warm.nr_roots; i++) {
		char json[4096], state[16] = "";
		double queued, dropped, waited, least = -1, still = 0;
		const char *p;

		if (!warm.root_mounts[i] || read_stats(warm.root_mounts[i], json, sizeof(json)))
			continue;
		p = strstr(json, "\"tier_state\":\"");
		if (p)
			sscanf(p + 14, "%15[a-z]", state);
		if (!state[0] || !strcmp(state, "off"))
			continue;
		for (;;) {
			struct pollfd pfd = { .fd = sig_fd, .events = POLLIN };
			struct signalfd_siginfo si;

			queued = cli_json_num(json, "tier_put_queued");
			clock_gettime(CLOCK_MONOTONIC, &now);
			waited = (double)(now.tv_sec - t0.tv_sec) +
				 (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
			if (least < 0 || queued < least) {
				least = queued;
				still = waited;
			}
			if (queued <= 0 || waited - still > WARM_TIER_WAIT_S)
				break;
			if (warm.tty)
				fprintf(stderr,
					"\r\033[Kwaiting for %.0f chunks to reach the shared "
					"tier (%.0f s)",
					queued, waited);
			else if (!said)
				fprintf(stderr,
					"ferry warm: waiting for %.0f chunks to reach the "
					"shared tier\n",
					queued);
			said = true;
			if (poll(&pfd, 1, WARM_TIER_POLL_MS) > 0 &&
				read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
				if (warm.tty)
					fputs("\r\033[K", stderr);
				fprintf(stderr,
					"ferry warm: stopped while %.0f chunks still wait "
					"for the shared tier\n",
					queued);
				return 128 + (int)si.ssi_signo;
			}
			if (read_stats(warm.root_mounts[i], json, sizeof(json)))
				break;
		}
		if (warm.tty && said)
			fputs("\r\033[K", stderr);
		dropped = cli_json_num(json, "tier_puts_dropped") - warm.root_tier_dropped0[i];
		if (queued > 0) {
			fprintf(stderr,
				"ferry warm: %.0f chunks still wait for the shared tier of %s "
				"after %d s without progress\n",
				queued, warm.root_mounts[i], WARM_TIER_WAIT_S);
			ret = 1;
		}
		fprintf(stderr, "ferry warm: shared tier %s: %.0f writes dropped%s\n", state,
			dropped > 0 ? dropped : 0,
			dropped > 0 ? " (those chunks stay only in this node's cache)" : "");
	}
	return ret;
}

/* The signals that stop a warm: SIGINT and SIGTERM, unless ignored when ferry started (as
 * in a job a non-interactive shell put in the background), which they then stay. */
static void warm_signals(sigset_t *sigs)
{
	static const int stoppers[] = { SIGINT, SIGTERM };

	sigemptyset(sigs);
	for (size_t i = 0; i < sizeof(stoppers) / sizeof(stoppers[0]); i++) {
		struct sigaction sa;

		if (!sigaction(stoppers[i], NULL, &sa) && sa.sa_handler != SIG_IGN)
			sigaddset(sigs, stoppers[i]);
	}
}

int warm_main(int argc, char **argv)
{
	struct ferry_resident *bufs = NULL;
	pthread_t walker, workers[WARM_WORKERS];
	sigset_t sigs;
	int sig_fd = -1, nr_started = 0, ret = 1;

	if (wants_help(argc, argv)) {
		printf("usage: ferry warm PATH...\n\n"
		       "Fetches every file under each PATH (files or directories on a ferry mount)\n"
		       "into the cache ahead of use, with a progress bar on a terminal. Ctrl-C or\n"
		       "SIGTERM stops it within about a chunk's fetch, saying how much was warmed\n"
		       "(exit 130 or 143). A PATH that is not on a ferry mount, or on one whose daemon\n"
		       "died, is refused before anything starts. On a mount with a shared tier\n"
		       "(--shared-cache) it then waits (up to 5 minutes) until every chunk it fetched\n"
		       "is in the tier, and says how many tier writes were dropped.\n");
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: ferry warm PATH...\n");
		return 1;
	}
	warm.nr_roots = argc - 1;
	warm.roots = calloc((size_t)warm.nr_roots, sizeof(*warm.roots));
	warm.root_piece_bytes = calloc((size_t)warm.nr_roots, sizeof(*warm.root_piece_bytes));
	warm.root_mounts = calloc((size_t)warm.nr_roots, sizeof(*warm.root_mounts));
	warm.root_tier_dropped0 = calloc((size_t)warm.nr_roots, sizeof(*warm.root_tier_dropped0));
	bufs = calloc(WARM_WORKERS, sizeof(*bufs));
	if (!warm.roots || !warm.root_piece_bytes || !warm.root_mounts ||
		!warm.root_tier_dropped0 || !bufs) {
		fprintf(stderr, "ferry warm: %s\n", strerror(ENOMEM));
		goto out;
	}
	for (int i = 0; i < warm.nr_roots; i++)
		if (warm_check_root(argv[i + 1], &warm.roots[i], &warm.root_piece_bytes[i],
			    &warm.root_mounts[i], &warm.root_tier_dropped0[i]))
			goto out;
	warm_signals(&sigs);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
	warm.done_fd = eventfd(0, EFD_CLOEXEC);
	if (sig_fd < 0 || warm.done_fd < 0) {
		fprintf(stderr, "ferry warm: %s\n", strerror(errno));
		goto out;
	}
	warm.tty = isatty(STDERR_FILENO);
	clock_gettime(CLOCK_MONOTONIC, &warm.start);
	ret = warm_start(&walker, workers, bufs, &nr_started);
	if (ret) {
		fprintf(stderr, "ferry warm: cannot start a thread: %s\n", strerror(-ret));
		ret = 1;
		goto out;
	}
	warm_watch(sig_fd);
	for (int i = 0; i < nr_started; i++)
		pthread_join(workers[i], NULL);
	pthread_join(walker, NULL);
	ret = warm_report();
	if (!ret)
		ret = warm_tier_drain(sig_fd);
out:
	if (sig_fd >= 0)
		close(sig_fd);
	if (warm.done_fd >= 0)
		close(warm.done_fd);
	for (size_t i = 0; i < warm.nr_files; i++)
		free(warm.files[i].path);
	free(warm.files);
	for (int i = 0; warm.roots && i < warm.nr_roots; i++)
		free(warm.roots[i]);
	free(warm.roots);
	free(warm.root_piece_bytes);
	for (int i = 0; warm.root_mounts && i < warm.nr_roots; i++)
		free(warm.root_mounts[i]);
	free(warm.root_mounts);
	free(warm.root_tier_dropped0);
	free(warm.gone_path);
	free(bufs);
	return ret;
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
		fprintf(stderr, "ferry manifest: cannot write in %s: %s\n", argv[1],
			strerror(errno));
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
