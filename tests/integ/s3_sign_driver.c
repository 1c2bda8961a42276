/* Test driver for the SigV4 signer: reads requests (one a line, tab-separated hex fields) on
 * stdin and prints, for each, the canonical request and the Authorization header (hex), so
 * s3_signer_matches_botocore.sh can compare them with botocore's byte for byte.
 * Input fields: method host path region access_key secret token unsigned(0/1) unix_time
 * nr_query (name value)... nr_headers (name value)... */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/remote/aws_config.h"
#include "fs/remote/s3_sign.h"

static char *unhex(const char *h)
{
	size_t n = strlen(h) / 2;
	char *s = malloc(n + 1);

	for (size_t i = 0; i < n; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		s[i] = (char)v;
	}
	s[n] = '\0';
	return s;
}

static void put_hex(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		printf("%02x", *p);
}

int main(void)
{
	static char line[1 << 20];
	char *f[256];

	while (fgets(line, sizeof(line), stdin)) {
		size_t nf = 0;
		line[strcspn(line, "\n")] = '\0';
		for (char *save, *t = strtok_r(line, "\t", &save); t && nf < 256;
			t = strtok_r(NULL, "\t", &save))
			f[nf++] = strcmp(t, "-") ? unhex(t) : strdup("");
		if (nf < 11) {
			fprintf(stderr, "s3_sign_driver: short line\n");
			return 2;
		}
		struct aws_credentials cred = { f[4], f[5], f[6][0] ? f[6] : NULL };
		size_t nq = (size_t)atoi(f[9]), k = 10;
		struct s3_kv q[64], h[64];
		for (size_t i = 0; i < nq; i++, k += 2)
			q[i] = (struct s3_kv){ f[k], f[k + 1] };
		size_t nh = (size_t)atoi(f[k++]);
		for (size_t i = 0; i < nh; i++, k += 2)
			h[i] = (struct s3_kv){ f[k], f[k + 1] };
		struct s3_sign_input in = {
			.method = f[0],
			.host = f[1],
			.path = f[2],
			.region = f[3],
			.query = q,
			.nr_query = nq,
			.headers = h,
			.nr_headers = nh,
			.payload_hash = atoi(f[7]) ? S3_UNSIGNED_PAYLOAD : NULL,
			.when = (time_t)atoll(f[8]),
			.cred = &cred,
		};
		struct s3_signed out;
		int err = s3_sign_request(&in, &out);
		if (err) {
			printf("error %d\n", err);
		} else {
			put_hex(out.canonical_request);
			putchar('\t');
			put_hex(out.authorization);
			putchar('\t');
			put_hex(out.encoded_path);
			putchar('\t');
			put_hex(out.encoded_query[0] ? out.encoded_query : "");
			putchar('\n');
			s3_signed_done(&out);
		}
		for (size_t i = 0; i < nf; i++)
			free(f[i]);
	}
	return 0;
}
