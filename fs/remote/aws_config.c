/* The AWS credential chain (see aws_config.h): options, environment, then the shared
 * credentials and config files in their INI dialect (profiles, `[profile x]`, `s3 =` blocks). */
#include "config.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include <openssl/crypto.h>

#include "fs/remote/aws_config.h"

/* The settings of one profile found in one file; strings owned. */
struct ini_profile {
	bool found;
	char *access_key_id, *secret_access_key, *session_token;
	char *region, *endpoint_url, *s3_endpoint_url, *s3_addressing_style;
};

static void free_secret(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static void ini_profile_done(struct ini_profile *p)
{
	free(p->access_key_id);
	free_secret(p->secret_access_key);
	free_secret(p->session_token);
	free(p->region);
	free(p->endpoint_url);
	free(p->s3_endpoint_url);
	free(p->s3_addressing_style);
	memset(p, 0, sizeof(*p));
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	*e = '\0';
	return s;
}

static int set_str(char **dst, const char *v)
{
	char *d = strdup(v);

	if (!d)
		return -ENOMEM;
	free_secret(*dst);
	*dst = d;
	return 0;
}

/* Is this section header the profile we want? In the credentials file a profile is
 * `[name]`; in the config file `[profile name]`, except `[default]`. */
static bool section_matches(const char *section, const char *profile, bool config_file)
{
	if (!config_file)
		return !strcmp(section, profile);
	if (!strcmp(profile, "default") && !strcmp(section, "default"))
		return true;
	if (strncmp(section, "profile", 7) || (section[7] != ' ' && section[7] != '\t'))
		return false;
	const char *name = section + 8;
	while (*name == ' ' || *name == '\t')
		name++;
	return !strcmp(name, profile);
}

/* Reads profile from the file at path into p. A missing file is not an error (-ENOENT is
 * returned and p stays empty). A file that holds a secret of the profile and is readable by
 * group or others is refused with -EPERM. */
static int ini_read(const char *path, const char *profile, bool config_file, struct ini_profile *p,
	char *errbuf, size_t errlen)
{
	char line[4096], section[512] = "";
	bool in_profile = false, in_s3 = false;
	struct stat st;
	FILE *f;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return -ENOENT;
		err = -errno;
		snprintf(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
		return err;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(errbuf, errlen, "%s is not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	while (fgets(line, sizeof(line), f)) {
		bool indented = line[0] == ' ' || line[0] == '\t';
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (!end)
				continue;
			*end = '\0';
			snprintf(section, sizeof(section), "%s", trim(s + 1));
			in_profile = section_matches(section, profile, config_file);
			if (in_profile)
				p->found = true;
			in_s3 = false;
			continue;
		}
		if (!in_profile)
			continue;
		char *eq = strchr(s, '=');
		if (!eq)
			continue;
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		if (!indented)
			in_s3 = false;
		if (in_s3) {
			/* A nested `s3 =` block: only the keys ferry uses. */
			if (!strcmp(key, "endpoint_url"))
				err = set_str(&p->s3_endpoint_url, val);
			else if (!strcmp(key, "addressing_style"))
				err = set_str(&p->s3_addressing_style, val);
		} else if (!strcmp(key, "s3") && !*val) {
			in_s3 = true;
		} else if (!strcmp(key, "aws_access_key_id")) {
			err = set_str(&p->access_key_id, val);
		} else if (!strcmp(key, "aws_secret_access_key")) {
			err = set_str(&p->secret_access_key, val);
		} else if (!strcmp(key, "aws_session_token")) {
			err = set_str(&p->session_token, val);
		} else if (!strcmp(key, "region")) {
			err = set_str(&p->region, val);
		} else if (!strcmp(key, "endpoint_url")) {
			err = set_str(&p->endpoint_url, val);
		}
		if (err)
			break;
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (!err && (p->secret_access_key || p->session_token) &&
		(st.st_mode & (S_IRGRP | S_IROTH))) {
		snprintf(errbuf, errlen,
			"refusing %s: it holds secrets and is readable by %s (mode %04o); "
			"run chmod 600 %s",
			path, (st.st_mode & S_IROTH) ? "others" : "its group",
			(unsigned)(st.st_mode & 07777), path);
		err = -EPERM;
	}
	return err;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* $HOME, else the user's home in the password database: mount(8) runs mount.ferry for an
 * fstab line without HOME in its environment. NULL when neither says. */
static const char *home_dir(char *buf, size_t len)
{
	const char *home = env("HOME");
	struct passwd pw, *res = NULL;

	if (home)
		return home;
	if (getpwuid_r(geteuid(), &pw, buf, len, &res) || !res || !pw.pw_dir || !*pw.pw_dir)
		return NULL;
	return pw.pw_dir;
}

/* Expands the file's path: the variable if set, else ~/.aws/NAME; NULL when there is no home. */
static char *file_path(const char *var, const char *name)
{
	char pwbuf[4096];
	const char *v = env(var), *home = home_dir(pwbuf, sizeof(pwbuf));
	char *p;

	if (v) {
		if (v[0] == '~' && v[1] == '/' && home) {
			if (asprintf(&p, "%s%s", home, v + 1) < 0)
				return NULL;
			return p;
		}
		return strdup(v);
	}
	if (!home)
		return NULL;
	if (asprintf(&p, "%s/.aws/%s", home, name) < 0)
		return NULL;
	return p;
}

void aws_credentials_done(struct aws_credentials *c)
{
	if (!c)
		return;
	free(c->access_key_id);
	free_secret(c->secret_access_key);
	free_secret(c->session_token);
	memset(c, 0, sizeof(*c));
}

void aws_config_done(struct aws_config *cfg)
{
	if (!cfg)
		return;
	aws_credentials_done(&cfg->cred);
	free(cfg->profile);
	free(cfg->region);
	free(cfg->endpoint);
	free(cfg->addressing);
	free(cfg->cred_source);
	memset(cfg, 0, sizeof(*cfg));
}

/* Copies the first non-NULL of a, b, c into *dst (leaves it NULL when all are). */
static int pick(char **dst, const char *a, const char *b, const char *c)
{
	const char *v = a ? a : b ? b : c;

	if (!v)
		return 0;
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

/* Fills cred from one profile's keys; -EINVAL when only half a pair is there. */
static int take_pair(struct aws_credentials *cred, const char *id, const char *secret,
	const char *token, const char *where, char *errbuf, size_t errlen)
{
	if (!id != !secret) {
		snprintf(errbuf, errlen, "%s has %s but not %s", where,
			id ? "an access key id" : "a secret access key",
			id ? "a secret access key" : "an access key id");
		return -EINVAL;
	}
	cred->access_key_id = strdup(id);
	cred->secret_access_key = strdup(secret);
	cred->session_token = token ? strdup(token) : NULL;
	if (!cred->access_key_id || !cred->secret_access_key || (token && !cred->session_token))
		return -ENOMEM;
	return 0;
}

int aws_config_load(struct aws_config *cfg, const struct aws_config_request *req, char *errbuf,
	size_t errlen)
{
	struct ini_profile cp = { 0 }, fp = { 0 };
	char *cred_path = NULL, *conf_path = NULL;
	bool explicit_profile = req->profile && *req->profile;
	int err = -ENOMEM, r;

	memset(cfg, 0, sizeof(*cfg));
	if (pick(&cfg->profile, explicit_profile ? req->profile : NULL, env("AWS_PROFILE"),
		    "default"))
		goto err;

	conf_path = file_path("AWS_CONFIG_FILE", "config");
	cred_path = file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
	if (conf_path) {
		r = ini_read(conf_path, cfg->profile, true, &cp, errbuf, errlen);
		if (r && r != -ENOENT) {
			err = r;
			goto err;
		}
	}

	if (pick(&cfg->region, req->region, env("AWS_REGION"),
		    env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION") : cp.region) ||
		(!cfg->region && !(cfg->region = strdup("us-east-1"))))
		goto err;
	const char *env_ep =
		env("AWS_ENDPOINT_URL_S3") ? env("AWS_ENDPOINT_URL_S3") : env("AWS_ENDPOINT_URL");
	if (pick(&cfg->endpoint, req->endpoint, env_ep,
		    cp.s3_endpoint_url ? cp.s3_endpoint_url : cp.endpoint_url))
		goto err;
	if (pick(&cfg->addressing, req->addressing, cp.s3_addressing_style, NULL))
		goto err;

	if (req->no_sign_request) {
		cfg->anonymous = true;
		err = 0;
		goto out;
	}

	/* 1. The environment, unless a profile was named on the command line (as the AWS CLI:
	 * --profile means that profile, whatever the environment holds). */
	if (!explicit_profile && (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY"))) {
		err = take_pair(&cfg->cred, env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
			env("AWS_SESSION_TOKEN"), "the environment", errbuf, errlen);
		if (!err)
			err = pick(&cfg->cred_source, "environment", NULL, NULL);
		if (err)
			goto err;
		goto out;
	}

	/* 2. The shared credentials file, 3. the config file. */
	if (cred_path) {
		r = ini_read(cred_path, cfg->profile, false, &fp, errbuf, errlen);
		if (r && r != -ENOENT) {
			err = r;
			goto err;
		}
	}
	const struct ini_profile *src = NULL;
	const char *src_path = NULL;
	if (fp.access_key_id || fp.secret_access_key) {
		src = &fp;
		src_path = cred_path;
	} else if (cp.access_key_id || cp.secret_access_key) {
		src = &cp;
		src_path = conf_path;
	}
	if (src) {
		char where[600];
		snprintf(where, sizeof(where), "%s [%s]", src_path, cfg->profile);
		err = take_pair(&cfg->cred, src->access_key_id, src->secret_access_key,
			src->session_token, where, errbuf, errlen);
		if (!err)
			err = pick(&cfg->cred_source, where, NULL, NULL);
		if (err)
			goto err;
		goto out;
	}
	if ((explicit_profile || env("AWS_PROFILE")) && !fp.found && !cp.found) {
		snprintf(errbuf, errlen, "AWS profile '%s' not found in %s or %s", cfg->profile,
			cred_path ? cred_path : "(no credentials file)",
			conf_path ? conf_path : "(no config file)");
		err = -ENOENT;
		goto err;
	}
	snprintf(errbuf, errlen,
		"no AWS credentials found for profile '%s' (set AWS_ACCESS_KEY_ID and "
		"AWS_SECRET_ACCESS_KEY, add them to %s, or use --no-sign-request for a public "
		"bucket)",
		cfg->profile, cred_path ? cred_path : "~/.aws/credentials");
	err = -ENOENT;
	goto err;
out:
	ini_profile_done(&cp);
	ini_profile_done(&fp);
	free(cred_path);
	free(conf_path);
	return err;
err:
	if (err == -ENOMEM)
		snprintf(errbuf, errlen, "out of memory reading the AWS configuration");
	aws_config_done(cfg);
	goto out;
}
