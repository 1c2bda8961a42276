/* The libcurl side of struct remote_ops, for fs/remote/'s HTTP-family backends and the fetch
 * engine (fs/fetch.c) only: remote.h stays free of curl, so the rest of fs/ never includes it. */
#ifndef FERRY_REMOTE_I_H
#define FERRY_REMOTE_I_H

#include <stdint.h>
#include <curl/curl.h>

#include "fs/remote/remote.h"

struct remote_http_ops {
	/* Configures a reset curl easy handle (URL, headers, signature, If-Match) for a GET of
	 * bytes [off, off+len) of obj; called for every attempt, so a signature is always fresh.
	 * Sets no callback. *headers is owned by the caller afterwards. */
	int (*prepare_get)(struct remote *r, const struct remote_object *obj, uint64_t off,
		uint64_t len, CURL *easy, struct curl_slist **headers);
};

#endif
