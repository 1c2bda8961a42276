/* The AWS credential chain: precedence of options, environment and files; profiles in both
 * files' dialects; the refusal of credentials files readable by others. Real files in a
 * temporary HOME; each Criterion test runs in its own process, so setenv stays local. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/remote/aws_config.h"

static char home[256];

static void write_file(const char *rel, mode_t mode, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", home, rel);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void setup(void)
{
	static const char *vars[] = { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_CONFIG_FILE" };
	char d[300];

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	snprintf(home, sizeof(home), "/tmp/ferry-aws-XXXXXX");
	cr_assert_not_null(mkdtemp(home));
	snprintf(d, sizeof(d), "%s/.aws", home);
	mkdir(d, 0700);
	setenv("HOME", home, 1);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(aws_config, .init = setup, .fini = teardown);

static const char creds[] = "# a comment\n"
			    "[default]\n"
			    "aws_access_key_id = AKIDDEFAULT\n"
			    "aws_secret_access_key = secretdefault\n"
			    "\n"
			    "[work]\n"
			    "aws_access_key_id=AKIDWORK\n"
			    "  aws_secret_access_key   =   secret/work+key  \n"
			    "aws_session_token = tokenwork\n";

static const char config[] = "[default]\n"
			     "region = eu-central-1\n"
			     "[profile work]\n"
			     "region = ap-south-1\n"
			     "endpoint_url = http://general.example:1\n"
			     "s3 =\n"
			     "  endpoint_url = http://s3.example:9000\n"
			     "  addressing_style = path\n"
			     "output = json\n"
			     "[work]\n"
			     "region = wrong-not-a-profile-section\n";

Test(aws_config, environment_credentials_come_first)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	setenv("AWS_SESSION_TOKEN", "tokenenv", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0,
		"%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDENV");
	cr_assert_str_eq(c.cred.secret_access_key, "secretenv");
	cr_assert_str_eq(c.cred.session_token, "tokenenv");
	cr_assert_str_eq(c.cred_source, "environment");
	cr_assert_str_eq(c.region, "us-east-1");
	aws_config_done(&c);
}

Test(aws_config, default_profile_from_the_credentials_file_and_region_from_config)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	write_file(".aws/config", 0644, config);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0,
		"%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDDEFAULT");
	cr_assert_str_eq(c.cred.secret_access_key, "secretdefault");
	cr_assert_null(c.cred.session_token);
	cr_assert_str_eq(c.region, "eu-central-1");
	cr_assert_null(c.endpoint);
	aws_config_done(&c);
}

Test(aws_config, aws_profile_selects_both_files_sections)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	write_file(".aws/config", 0644, config);
	setenv("AWS_PROFILE", "work", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0,
		"%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDWORK");
	cr_assert_str_eq(c.cred.secret_access_key, "secret/work+key");
	cr_assert_str_eq(c.cred.session_token, "tokenwork");
	cr_assert_str_eq(c.region, "ap-south-1");
	cr_assert_str_eq(c.endpoint, "http://s3.example:9000");
	cr_assert_str_eq(c.addressing, "path");
	aws_config_done(&c);
}

Test(aws_config, an_explicit_profile_beats_environment_credentials)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ .profile = "work" }, err,
			     sizeof(err)),
		0, "%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDWORK");
	aws_config_done(&c);
}

Test(aws_config, options_beat_environment_beat_files_for_region_and_endpoint)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	write_file(".aws/config", 0644, config);
	setenv("AWS_DEFAULT_REGION", "from-default-region", 1);
	setenv("AWS_ENDPOINT_URL", "http://env-general:1", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0);
	cr_assert_str_eq(c.region, "from-default-region");
	cr_assert_str_eq(c.endpoint, "http://env-general:1");
	aws_config_done(&c);

	setenv("AWS_REGION", "from-region", 1);
	setenv("AWS_ENDPOINT_URL_S3", "http://env-s3:2", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0);
	cr_assert_str_eq(c.region, "from-region");
	cr_assert_str_eq(c.endpoint, "http://env-s3:2");
	aws_config_done(&c);

	cr_assert_eq(aws_config_load(&c,
			     &(struct aws_config_request){ .region = "opt-region",
				     .endpoint = "http://opt:3",
				     .addressing = "virtual" },
			     err, sizeof(err)),
		0);
	cr_assert_str_eq(c.region, "opt-region");
	cr_assert_str_eq(c.endpoint, "http://opt:3");
	cr_assert_str_eq(c.addressing, "virtual");
	aws_config_done(&c);
}

Test(aws_config, refuses_a_credentials_file_readable_by_others_without_echoing_it)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0644, creds);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)),
		-EPERM);
	cr_assert(strstr(err, "readable by others"), "%s", err);
	cr_assert(strstr(err, "chmod 600"), "%s", err);
	cr_assert_null(strstr(err, "secretdefault"), "%s", err);
	cr_assert_null(strstr(err, "secret/work+key"), "%s", err);
	write_file(".aws/credentials", 0640, creds);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)),
		-EPERM);
	cr_assert(strstr(err, "its group"), "%s", err);
}

Test(aws_config, honours_the_file_location_variables)
{
	struct aws_config c;
	char err[256] = "", path[400];

	write_file("creds-elsewhere", 0600,
		"[default]\naws_access_key_id=AKIDX\naws_secret_access_key=sx\n");
	write_file("config-elsewhere", 0644, "[default]\nregion = sa-east-1\n");
	snprintf(path, sizeof(path), "%s/creds-elsewhere", home);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	snprintf(path, sizeof(path), "%s/config-elsewhere", home);
	setenv("AWS_CONFIG_FILE", path, 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)), 0,
		"%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDX");
	cr_assert_str_eq(c.region, "sa-east-1");
	aws_config_done(&c);
}

Test(aws_config, credentials_in_the_config_file_are_used_when_the_other_has_none)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/config", 0600,
		"[profile p]\naws_access_key_id = AKIDCONF\naws_secret_access_key = sconf\n");
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ .profile = "p" }, err,
			     sizeof(err)),
		0, "%s", err);
	cr_assert_str_eq(c.cred.access_key_id, "AKIDCONF");
	aws_config_done(&c);
}

Test(aws_config, a_missing_profile_is_named_in_the_error)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0600, creds);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ .profile = "nope" }, err,
			     sizeof(err)),
		-ENOENT);
	cr_assert(strstr(err, "profile 'nope' not found"), "%s", err);
}

Test(aws_config, without_home_the_files_are_in_the_password_databases_home)
{
	/* mount(8) runs mount.ferry without HOME: ~ is then the user's home from passwd. */
	struct passwd *pw = getpwuid(geteuid());
	struct aws_config c;
	char err[512] = "", want[300];

	cr_assert_not_null(pw);
	unsetenv("HOME");
	snprintf(want, sizeof(want), "%s/.aws/credentials", pw->pw_dir);
	cr_assert_eq(aws_config_load(&c,
			     &(struct aws_config_request){ .profile = "ferry-no-such-profile" },
			     err, sizeof(err)),
		-ENOENT);
	cr_assert(strstr(err, want), "'%s' does not name %s", err, want);
}

Test(aws_config, no_credentials_at_all_suggests_no_sign_request)
{
	struct aws_config c;
	char err[256] = "";

	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)),
		-ENOENT);
	cr_assert(strstr(err, "--no-sign-request"), "%s", err);
}

Test(aws_config, no_sign_request_is_anonymous_and_reads_no_credentials)
{
	struct aws_config c;
	char err[256] = "";

	write_file(".aws/credentials", 0666, creds); /* would be refused if it were read */
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ .no_sign_request = true },
			     err, sizeof(err)),
		0, "%s", err);
	cr_assert(c.anonymous);
	cr_assert_null(c.cred.access_key_id);
	cr_assert_null(c.cred.secret_access_key);
	aws_config_done(&c);
}

Test(aws_config, half_a_key_pair_is_an_error)
{
	struct aws_config c;
	char err[256] = "";

	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)),
		-EINVAL);
	cr_assert(strstr(err, "not a secret access key"), "%s", err);
	unsetenv("AWS_ACCESS_KEY_ID");
	write_file(".aws/credentials", 0600, "[default]\naws_secret_access_key = onlysecret\n");
	cr_assert_eq(aws_config_load(&c, &(struct aws_config_request){ 0 }, err, sizeof(err)),
		-EINVAL);
	cr_assert_null(strstr(err, "onlysecret"), "%s", err);
}
