/* Fuzz target for the AWS shared config and credentials file reader of fs/remote/aws_config.c (the
 * INI dialect of ~/.aws/config and ~/.aws/credentials, profiles and `s3 =` blocks): whatever
 * the files hold, aws_config_load returns 0 with complete settings, or -errno with a one-line
 * reason that never quotes a secret.
 * Input: byte 0 picks the request (bit 0: --profile dev, bit 1: --no-sign-request, bit 2:
 * AWS_PROFILE=dev, bit 3: the credentials file is group-readable), then the config file's
 * bytes, a NUL, the credentials file's bytes (no NUL: no credentials file). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/remote/aws_config.h"
#include "tests/fuzz/fuzz_util.h"

static char dir[64], conf_path[96], cred_path[96];

static void rm_dir(void)
{
	unlink(conf_path);
	unlink(cred_path);
	rmdir(dir);
}

static void setup_once(void)
{
	static const char *const unset[] = { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3",
		"AWS_ENDPOINT_URL", "AWS_PROFILE" };

	if (dir[0])
		return;
	/* tmpfs where there is one: each input rewrites a file there. */
	snprintf(dir, sizeof(dir), "%s/ferry_fuzz_aws.XXXXXX",
		access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fuzz_check(mkdtemp(dir) != NULL, "a temp dir");
	snprintf(conf_path, sizeof(conf_path), "%s/config", dir);
	snprintf(cred_path, sizeof(cred_path), "%s/credentials", dir);
	atexit(rm_dir);
	for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++)
		unsetenv(unset[i]);
	setenv("HOME", dir, 1);
	setenv("AWS_CONFIG_FILE", conf_path, 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", cred_path, 1);
}

static void put(const char *path, const uint8_t *data, size_t n, mode_t mode)
{
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fuzz_check(fd >= 0, "the temp file opens");
	fuzz_check(n == 0 || write(fd, data, n) == (ssize_t)n, "the temp file is written");
	fchmod(fd, mode);
	close(fd);
}

/* Whether err quotes the value of a "KEY = value" line naming a secret. Only values holding
 * "SECRET" and a digit count: no fixed text of a message (paths, "AWS_SECRET_ACCESS_KEY")
 * can hold such a value by chance. */
static bool err_quotes_secret(const uint8_t *data, size_t n, const char *err)
{
	static const char *const keys[] = { "aws_secret_access_key", "aws_session_token" };

	for (size_t k = 0; k < 2; k++) {
		const uint8_t *p = data, *end = data + n;
		size_t kl = strlen(keys[k]);

		while ((p = memmem(p, (size_t)(end - p), keys[k], kl))) {
			const uint8_t *v = p + kl, *e;
			char val[128];

			while (v < end && (*v == ' ' || *v == '\t' || *v == '='))
				v++;
			e = v;
			while (e < end && *e != '\n' && *e != '\r' && *e != ' ' && *e != '\0')
				e++;
			if (e - v >= 8 && e - v < (ptrdiff_t)sizeof(val)) {
				memcpy(val, v, (size_t)(e - v));
				val[e - v] = '\0';
				if (strstr(val, "SECRET") && strpbrk(val, "0123456789") &&
					strstr(err, val))
					return true;
			}
			p += kl;
		}
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct aws_config_request req = { 0 };
	struct aws_config cfg;
	const uint8_t *conf, *nul, *cred = NULL;
	size_t conf_len, cred_len = 0;
	char err[512] = "";
	int ret;

	if (size < 1)
		return 0;
	setup_once();
	conf = data + 1;
	nul = memchr(conf, '\0', size - 1);
	conf_len = nul ? (size_t)(nul - conf) : size - 1;
	if (nul) {
		cred = nul + 1;
		cred_len = (size_t)(data + size - cred);
	}
	put(conf_path, conf, conf_len, 0600);
	if (cred)
		put(cred_path, cred, cred_len, (data[0] & 8) ? 0640 : 0600);
	else
		unlink(cred_path);
	if (data[0] & 1)
		req.profile = "dev";
	req.no_sign_request = data[0] & 2;
	if (data[0] & 4)
		setenv("AWS_PROFILE", "dev", 1);
	else
		unsetenv("AWS_PROFILE");

	ret = aws_config_load(&cfg, &req, err, sizeof(err));
	fuzz_check(ret == 0 || ret == -ENOENT || ret == -EPERM || ret == -EINVAL || ret == -ENOMEM,
		"aws_config_load: 0, -ENOENT, -EPERM, -EINVAL or -ENOMEM");
	if (ret == 0) {
		fuzz_check(cfg.profile && cfg.region, "a profile and a region");
		fuzz_check(cfg.anonymous == req.no_sign_request, "anonymous only when asked");
		if (!cfg.anonymous)
			fuzz_check(cfg.cred.access_key_id && cfg.cred.secret_access_key &&
					   cfg.cred_source,
				"credentials are complete");
		if (req.profile)
			fuzz_check(!strcmp(cfg.profile, "dev"), "--profile is the profile used");
	} else {
		fuzz_check_reason(err);
		fuzz_check(!err_quotes_secret(data, size, err), "a message never quotes a secret");
	}
	aws_config_done(&cfg);
	aws_config_done(&cfg);
	return 0;
}
