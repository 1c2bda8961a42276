/* Test driver for remote_s3: opens an s3:// source and lists, stats or reads through
 * remote_s3_ops the way the namespace and the fetch engine do (reads: prepare_get on a curl
 * easy handle, then perform). Used by s3_backend_lists_and_reads.sh.
 *   s3_backend_driver [opts] walk SOURCE              every entry: "d PATH" / "f PATH SIZE ETAG"
 *   s3_backend_driver [opts] stat SOURCE PATH         "d PATH" / "f PATH SIZE ETAG"
 *   s3_backend_driver [opts] read SOURCE PATH OFF LEN [ETAG]   the bytes on stdout
 * opts: --endpoint URL --addressing MODE --profile P --no-sign-request
 * Exit: 0, 1 error (message on stderr), 2 ENOENT, 3 the object changed (412). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fs/remote/remote_i.h"

static void entry_free(struct remote_entry *e)
{
	/* remote_entry_done lives in remote.c with the other backends' tables; not linked here. */
	free(e->name);
	free(e->etag);
	free(e->link_target);
}

struct walk {
	struct remote *r;
	const char *dir;
	char **subdirs;
	size_t nr_subdirs;
};

static int on_entry(void *arg, const struct remote_entry *e)
{
	struct walk *w = arg;
	char *p;

	if (asprintf(&p, "%s%s%s", w->dir, *w->dir ? "/" : "", e->name) < 0)
		return -ENOMEM;
	if (e->type == REMOTE_DIR) {
		printf("d %s\n", p);
		w->subdirs = realloc(w->subdirs, (w->nr_subdirs + 1) * sizeof(char *));
		w->subdirs[w->nr_subdirs++] = p;
	} else {
		printf("f %s %llu %s\n", p, (unsigned long long)e->size, e->etag ? e->etag : "-");
		free(p);
	}
	return 0;
}

static int walk(struct remote *r, const char *dir)
{
	struct walk w = { r, dir, NULL, 0 };
	int err = r->ops->list(r, dir, on_entry, &w);

	for (size_t i = 0; i < w.nr_subdirs; i++) {
		if (!err)
			err = walk(r, w.subdirs[i]);
		free(w.subdirs[i]);
	}
	free(w.subdirs);
	return err;
}

static size_t on_body(char *d, size_t size, size_t n, void *arg)
{
	return fwrite(d, size, n, stdout) * size;
}

int main(int argc, char **argv)
{
	struct remote_options opt = { 0 };
	struct remote *r;
	char errbuf[512] = "";
	int i = 1, err, rc = 0;

	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--endpoint") && i + 1 < argc)
			opt.endpoint = argv[++i];
		else if (!strcmp(argv[i], "--addressing") && i + 1 < argc)
			opt.addressing = argv[++i];
		else if (!strcmp(argv[i], "--profile") && i + 1 < argc)
			opt.profile = argv[++i];
		else if (!strcmp(argv[i], "--no-sign-request"))
			opt.no_sign_request = true;
		else
			return fprintf(stderr, "bad option %s\n", argv[i]), 1;
	}
	if (argc - i < 2)
		return fprintf(stderr, "usage: see the file's header\n"), 1;
	const char *cmd = argv[i], *source = argv[i + 1];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	err = remote_s3_ops.open(&r, source, &opt, errbuf, sizeof(errbuf));
	if (err) {
		fprintf(stderr, "%s\n", errbuf);
		return err == -ENOENT ? 2 : 1;
	}
	if (!strcmp(cmd, "walk")) {
		err = walk(r, "");
	} else if (!strcmp(cmd, "stat") && argc - i >= 3) {
		struct remote_entry e;
		err = r->ops->stat(r, argv[i + 2], &e);
		if (!err) {
			if (e.type == REMOTE_DIR)
				printf("d %s\n", argv[i + 2]);
			else
				printf("f %s %llu %s\n", argv[i + 2], (unsigned long long)e.size,
					e.etag ? e.etag : "-");
			entry_free(&e);
		}
	} else if (!strcmp(cmd, "read") && argc - i >= 5) {
		struct remote_object obj = {
			.path = argv[i + 2],
			.etag = argc - i >= 6 ? argv[i + 5] : NULL,
		};
		struct curl_slist *h = NULL;
		CURL *easy = curl_easy_init();
		long status = 0;
		err = r->ops->http->prepare_get(r, &obj, strtoull(argv[i + 3], NULL, 10),
			strtoull(argv[i + 4], NULL, 10), easy, &h);
		if (!err) {
			curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
			CURLcode c = curl_easy_perform(easy);
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
			if (c != CURLE_OK) {
				fprintf(stderr, "curl: %s\n", curl_easy_strerror(c));
				err = -EIO;
			} else if (status == 412) {
				fprintf(stderr, "HTTP 412\n");
				rc = 3;
			} else if (status != 206) {
				fprintf(stderr, "HTTP %ld\n", status);
				err = -EIO;
			}
		}
		curl_slist_free_all(h);
		curl_easy_cleanup(easy);
	} else {
		fprintf(stderr, "bad command %s\n", cmd);
		err = -EINVAL;
	}
	r->ops->free(r);
	if (err) {
		fprintf(stderr, "%s failed: %s\n", cmd, strerror(-err));
		return err == -ENOENT ? 2 : 1;
	}
	fflush(stdout);
	return rc;
}
