/* The AWS credential chain and settings for the S3 backend: command-line options, then the
 * environment, then the shared credentials and config files (profiles). Secrets stay here and
 * in the signer; they never reach a log line or an error string. */
#ifndef FERRY_AWS_CONFIG_H
#define FERRY_AWS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct aws_credentials {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL when none */
};

/* What the caller asked for explicitly (the command line); NULL fields are looked up. */
struct aws_config_request {
	const char *profile;    /* --profile; beats AWS_PROFILE and disables env credentials */
	const char *region;     /* --region */
	const char *endpoint;   /* --endpoint */
	const char *addressing; /* --addressing */
	bool no_sign_request;   /* anonymous: no credentials are looked up at all */
};

/* The resolved settings. Strings owned here (aws_config_done frees and wipes them).
 * anonymous is true only when asked for; otherwise cred is complete. */
struct aws_config {
	struct aws_credentials cred;
	bool anonymous;
	char *profile;     /* the profile used ("default" when none named) */
	char *region;      /* never NULL after a successful load ("us-east-1" by default) */
	char *endpoint;    /* NULL: AWS's endpoint for the region */
	char *addressing;  /* NULL: auto */
	char *cred_source; /* where the credentials came from, for messages: "environment",
			    * "/root/.aws/credentials [default]" */
};

/* Resolves the settings from req, the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3,
 * AWS_ENDPOINT_URL, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, HOME) and the files.
 * 0, or -errno with a one-line reason in errbuf: -ENOENT no credentials or no such profile,
 * -EPERM a credentials file readable by group or others, -EINVAL a partial key pair. */
int aws_config_load(struct aws_config *cfg, const struct aws_config_request *req, char *errbuf,
	size_t errlen);
void aws_config_done(struct aws_config *cfg);

void aws_credentials_done(struct aws_credentials *c);

#endif
