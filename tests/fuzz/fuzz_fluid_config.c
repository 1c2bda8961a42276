/* Fuzz target for ferry fluid-mount's reader of Fluid's ThinRuntime config.json (mount/fluid.c):
 * whatever the JSON holds, `ferry fluid-mount --dry-run` exits 0 with one command line on
 * stdout, or 1; every stderr line is its own (a key with a newline cannot forge one), and the
 * secret in the secrets dir never reaches stdout or stderr, whichever option names its file;
 * control characters on stderr are escaped.
 * Input: the config's bytes, with @S@ replaced by the secrets dir (it holds s/k, the secret)
 * and @R@ by the --local-root dir (it holds data/). */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mount/cli.h"
#include "mount/cmd.h"
#include "tests/fuzz/fuzz_util.h"

#define SECRET "FUZZSECRET"

/* --dry-run never mounts: these are linked in by fluid.c's real run only. */
int mount_main(int argc, char **argv)
{
	(void)argc, (void)argv;
	abort();
}

int umount_main(int argc, char **argv)
{
	(void)argc, (void)argv;
	abort();
}

bool cli_is_mount_point(const char *path, char *fstype, size_t len)
{
	(void)path, (void)fstype, (void)len;
	abort();
}

int cli_lexical_abspath(const char *cwd, const char *path, char *out, size_t len)
{
	(void)cwd, (void)path, (void)out, (void)len;
	abort();
}

static char dir[64], secrets[96], root[96], conf[96], out[96], err[96];

static void rm_tree(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd)) {
	}
}

static void setup_once(void)
{
	char p[160];
	FILE *f;

	if (dir[0])
		return;
	snprintf(dir, sizeof(dir), "%s/ferry_fuzz_fluid.XXXXXX",
		access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fuzz_check(mkdtemp(dir) != NULL, "a temp dir");
	atexit(rm_tree);
	snprintf(secrets, sizeof(secrets), "%s/secrets", dir);
	snprintf(root, sizeof(root), "%s/root", dir);
	snprintf(conf, sizeof(conf), "%s/config.json", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(err, sizeof(err), "%s/err", dir);
	fuzz_check(!mkdir(secrets, 0700), "the secrets dir");
	snprintf(p, sizeof(p), "%s/s", secrets);
	fuzz_check(!mkdir(p, 0700), "the secret's dir");
	snprintf(p, sizeof(p), "%s/s/k", secrets);
	f = fopen(p, "w");
	fuzz_check(f && fputs(SECRET "\n", f) >= 0 && !fclose(f), "the secret file");
	fuzz_check(!mkdir(root, 0700), "the local root");
	snprintf(p, sizeof(p), "%s/data", root);
	fuzz_check(!mkdir(p, 0700), "the local source");
}

/* The config file: data with @S@ and @R@ expanded. */
static void write_config(const uint8_t *data, size_t n)
{
	FILE *f = fopen(conf, "w");

	fuzz_check(f != NULL, "the config file opens");
	for (size_t i = 0; i < n; i++) {
		if (i + 3 <= n && data[i] == '@' && data[i + 2] == '@' &&
			(data[i + 1] == 'S' || data[i + 1] == 'R')) {
			fputs(data[i + 1] == 'S' ? secrets : root, f);
			i += 2;
		} else {
			fputc(data[i], f);
		}
	}
	fuzz_check(!fclose(f), "the config file is written");
}

/* The whole of path, NUL-terminated (its size in *n); NULL when empty. */
static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *s = NULL;
	size_t cap = 0;

	*n = 0;
	fuzz_check(f != NULL, "the output file opens");
	for (;;) {
		if (*n + 4096 + 1 > cap) {
			cap = 2 * cap + 4096 + 1;
			s = realloc(s, cap);
			fuzz_check(s != NULL, "memory");
		}
		size_t got = fread(s + *n, 1, 4096, f);

		*n += got;
		if (!got)
			break;
	}
	fclose(f);
	s[*n] = '\0';
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[] = { "fluid-mount", "--dry-run", "--secrets-dir", secrets, "--local-root", root,
		conf, NULL };
	int saved_out, saved_err, fd_out, fd_err, rc;
	size_t n_out, n_err;
	char *o, *e;

	setup_once();
	write_config(data, size);
	fflush(stdout);
	fflush(stderr);
	saved_out = dup(1);
	saved_err = dup(2);
	fd_out = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fd_err = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fuzz_check(saved_out >= 0 && saved_err >= 0 && fd_out >= 0 && fd_err >= 0, "fds");
	dup2(fd_out, 1);
	dup2(fd_err, 2);
	rc = fluid_mount_main(7, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	close(fd_out);
	close(fd_err);

	o = slurp(out, &n_out);
	e = slurp(err, &n_err);
	fuzz_check(rc == 0 || rc == 1, "exit 0 or 1");
	fuzz_check(strlen(o) == n_out && strlen(e) == n_err, "no NUL byte printed");
	/* (unless the input wrote it itself: the fuzzer learns the word from the comparisons) */
	if (!memmem(data, size, SECRET, strlen(SECRET)))
		fuzz_check(!strstr(o, SECRET) && !strstr(e, SECRET), "the secret is never printed");
	if (rc == 0)
		fuzz_check(n_out && strchr(o, '\n') == o + n_out - 1, "one command line");
	else
		fuzz_check(n_out == 0 && n_err, "a failure prints no command and says why");
	for (const char *c = e; *c; c++)
		fuzz_check(*c == '\n' || ((unsigned char)*c >= 0x20 && *c != 0x7f),
			"no control character from the JSON on stderr");
	for (const char *l = e; *l; l = strchr(l, '\n') + 1) {
		fuzz_check(!strncmp(l, "ferry fluid-mount: ", 19), "each stderr line is ours");
		fuzz_check(strchr(l, '\n') != NULL, "each stderr line ends");
	}
	free(o);
	free(e);
	return 0;
}
