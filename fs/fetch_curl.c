/* The fetch engine's HTTP side (see fetch_i.h): one thread drives every ranged GET of a
 * fetcher on one libcurl multi handle (connection reuse, up to max_transfers in flight, retries
 * with jittered backoff), checks that each response is exactly the bytes and version asked
 * for, and hands the finished job back to fetch.c (fetch_job_deliver). It never touches the
 * disk. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/fetch_i.h"
#include "fs/log.h"
#include "fs/remote/net.h"
#include "fs/remote/remote_i.h"

/* curl's receive buffer: the 16 KiB default costs a recv and a callback per 16 KiB; with
 * 512 KiB a chunk's transfer took 16-20 ms instead of 29-39 ms (16 in flight, loopback). */
#define FETCH_RECV_BUFFER (512L << 10)
#define FETCH_BACKOFF_MAX 10000 /* ms */

/* --- the curl thread --- */

static size_t job_header(char *line, size_t size, size_t n, void *arg)
{
	struct fetch_job *j = arg;
	size_t len = size * n, vl;
	const char *v;

	if (len > 5 && !strncmp(line, "HTTP/", 5)) {
		const char *sp = memchr(line, ' ', len);

		/* A new response (after a 100 Continue, say): forget the last one's headers. */
		j->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		j->have_range = j->etag_too_long = false;
		j->resp_etag[0] = '\0';
		j->resp_mtime = 0;
		j->retry_after_ms = -1;
	} else if ((v = net_header_value(line, len, "Content-Range", &vl))) {
		j->have_range =
			!net_parse_content_range(v, vl, &j->cr_start, &j->cr_end, &j->cr_total);
	} else if ((v = net_header_value(line, len, "ETag", &vl))) {
		j->etag_too_long = vl >= sizeof(j->resp_etag);
		if (!j->etag_too_long) {
			memcpy(j->resp_etag, v, vl);
			j->resp_etag[vl] = '\0';
		}
	} else if ((v = net_header_value(line, len, "Last-Modified", &vl))) {
		j->resp_mtime = net_parse_http_date(v, vl);
	} else if ((v = net_header_value(line, len, "Retry-After", &vl))) {
		j->retry_after_ms = net_parse_retry_after(v, vl);
	}
	return len;
}

static size_t job_body(char *data, size_t size, size_t n, void *arg)
{
	struct fetch_job *j = arg;
	size_t len = size * n;

	if (j->status != 206 && j->status != 200)
		return len; /* an error page: not data */
	if (j->got + len > j->len) {
		j->overflow = true;
		return 0;
	}
	memcpy(j->buf + j->got, data, len);
	j->got += len;
	return len;
}

static int start_job(struct fetcher *f, struct fetch_job *j)
{
	CURL *e = f->nr_idle_easy ? f->idle_easy[--f->nr_idle_easy] : curl_easy_init();
	int ret;

	if (!e)
		return -ENOMEM;
	curl_easy_reset(e);
	j->headers = NULL;
	ret = f->r->ops->http->prepare_get(f->r, j->obj, j->off, j->len, e, &j->headers);
	if (ret) {
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		f->idle_easy[f->nr_idle_easy++] = e;
		return ret;
	}
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, FETCH_RECV_BUFFER);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, job_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, job_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(e, CURLOPT_PRIVATE, j);
	j->easy = e;
	j->got = 0;
	j->status = 0;
	j->have_range = j->overflow = j->etag_too_long = false;
	j->resp_etag[0] = '\0';
	j->resp_mtime = 0;
	j->retry_after_ms = -1;
	j->attempts++;
	j->start_ns = fetch_now_ns();
	atomic_fetch_add(&f->requests, 1);
	if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		j->easy = NULL;
		f->idle_easy[f->nr_idle_easy++] = e;
		return -EIO;
	}
	f->nr_active++;
	j->active_next = f->active;
	f->active = j;
	return 0;
}

/* An ETag without its quotes: some stores quote it in listings and not in responses. */
static void etag_unquoted(const char *t, const char **p, size_t *len)
{
	size_t n = strlen(t);

	if (n >= 2 && t[0] == '"' && t[n - 1] == '"') {
		t++;
		n -= 2;
	}
	*p = t;
	*len = n;
}

/* Checks that a response is of the pinned version: the same ETag when the object has one
 * (a response without one cannot be checked, so it is not data), else the same
 * Last-Modified when the response sends one; the size is checked by the caller. A server
 * that ignores If-Match answers with the new version's ETag, which lands here. */
static enum net_error check_version(const struct fetch_job *j)
{
	const char *want, *got;
	size_t wl, gl;

	if (j->etag_too_long)
		return NET_BAD_RESPONSE;
	if (j->obj->etag) {
		if (!j->resp_etag[0])
			return NET_BAD_RESPONSE;
		etag_unquoted(j->obj->etag, &want, &wl);
		etag_unquoted(j->resp_etag, &got, &gl);
		return wl == gl && !memcmp(want, got, wl) ? NET_OK : NET_CHANGED;
	}
	if (j->obj->mtime.tv_sec > 0 && j->resp_mtime > 0 && j->resp_mtime != j->obj->mtime.tv_sec)
		return NET_CHANGED;
	return NET_OK;
}

/* Checks that a response is exactly the bytes asked for, of the version asked for: 206 with
 * the requested Content-Range and the pinned total, or 200 with the whole object when the
 * chunk is the whole object. Anything else, other 2xx included, is an error, never data. */
static enum net_error check_response(const struct fetch_job *j, CURLcode code)
{
	enum net_error ne;

	if (j->overflow)
		return NET_BAD_RESPONSE;
	if (code != CURLE_OK)
		return net_error_from_curl(code);
	if (j->status == 206) {
		if (!j->have_range)
			return NET_BAD_RESPONSE;
		if (j->cr_total != j->obj->size)
			return NET_CHANGED;
		if (j->cr_start != j->off || j->cr_end != j->off + j->len - 1)
			return NET_BAD_RESPONSE;
	} else if (j->status == 200) {
		/* A server that ignores Range is fine only when the chunk is the whole object. */
		if (j->off != 0 || j->len != j->obj->size)
			return NET_BAD_RESPONSE;
	} else if (j->status >= 200 && j->status < 300) {
		return NET_BAD_RESPONSE; /* 201, 203, 204...: not the bytes asked for */
	} else {
		return net_error_from_status(j->status);
	}
	ne = check_version(j);
	if (ne != NET_OK)
		return ne;
	return j->got == j->len ? NET_OK : NET_SHORT_BODY;
}

static void retry_later(struct fetcher *f, struct fetch_job *j)
{
	/* attempts counts this one: the first retry waits backoff_ms */
	uint64_t ms = net_backoff_ms(j->attempts - 1, f->backoff_ms, FETCH_BACKOFF_MAX,
		j->retry_after_ms);

	j->not_before_ns = fetch_now_ns() + ms * 1000000ull;
	j->next = f->ready;
	f->ready = j;
	atomic_fetch_add(&f->retries, 1);
}

static void finish_transfer(struct fetcher *f, struct fetch_job *j, CURLcode code)
{
	struct fetch_job **pp;
	enum net_error ne;

	for (pp = &f->active; *pp && *pp != j; pp = &(*pp)->active_next)
		;
	if (*pp)
		*pp = j->active_next;
	curl_multi_remove_handle(f->multi, j->easy);
	f->idle_easy[f->nr_idle_easy++] = j->easy;
	j->easy = NULL;
	curl_slist_free_all(j->headers);
	j->headers = NULL;
	f->nr_active--;
	ne = check_response(j, code);
	fetch_count_request(f, fetch_now_ns() - j->start_ns, ne);
	if (ne == NET_OK) {
		atomic_fetch_add(&f->bytes_fetched, j->got);
		atomic_fetch_add(&f->fetch_ns, fetch_now_ns() - j->start_ns);
		j->err = 0;
		fetch_job_deliver(f, j);
		return;
	}
	if (net_error_is_retryable(ne) && j->attempts <= f->max_retries && !f->stop_curl) {
		log_debug("fetch '%s' chunk %llu: %s (HTTP %ld), retrying", j->obj->path,
			(unsigned long long)j->idx, net_error_str(ne), j->status);
		retry_later(f, j);
		return;
	}
	/* A changed object is ESTALE, 403 EACCES, 404 ENOENT (docs/ferry.md), the rest EIO. */
	j->err = net_error_to_errno(ne);
	log_warn("fetch '%s' bytes %llu-%llu: %s (HTTP %ld, %u attempts)", j->obj->path,
		(unsigned long long)j->off, (unsigned long long)(j->off + j->len - 1),
		net_error_str(ne), j->status, j->attempts);
	fetch_job_deliver(f, j);
}

/* Curl thread: every transfer waiting or in flight fails with EIO, so no reader waits for
 * ever (stopping, or aborted). */
static void fail_all(struct fetcher *f)
{
	while (f->ready) {
		struct fetch_job *j = f->ready;

		f->ready = j->next;
		j->err = -EIO;
		fetch_job_deliver(f, j);
	}
	while (f->active) {
		struct fetch_job *j = f->active;

		f->active = j->active_next;
		curl_multi_remove_handle(f->multi, j->easy);
		curl_easy_cleanup(j->easy);
		j->easy = NULL;
		curl_slist_free_all(j->headers);
		j->headers = NULL;
		f->nr_active--;
		j->err = -EIO;
		fetch_job_deliver(f, j);
	}
}

static void *curl_thread_main(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct fetch_job *in, *j, **pp;
		uint64_t now, next_ns = 0;
		int running, timeout_ms = 1000;
		CURLMsg *msg;
		bool stop, aborted;

		pthread_mutex_lock(&f->lock);
		in = f->queue;
		f->queue = NULL;
		f->queue_tail = &f->queue;
		stop = f->stop_curl;
		aborted = f->aborted;
		pthread_mutex_unlock(&f->lock);
		/* Jobs a reader waits for go before readahead (within a file or across a
		 * directory), each kind in submission order: readers want their first chunk
		 * first, and a read must not queue behind chunks nobody asked for yet. */
		while (in) {
			j = in;
			in = j->next;
			for (pp = &f->ready; *pp && (!j->batch || (*pp)->batch); pp = &(*pp)->next)
				;
			j->next = *pp;
			*pp = j;
		}
		if (stop)
			break;
		if (aborted) {
			fail_all(f);
			curl_multi_poll(f->multi, NULL, 0, 1000, NULL);
			continue;
		}
		now = fetch_now_ns();
		for (pp = &f->ready; *pp && f->nr_active < f->max_transfers;) {
			int ret;

			j = *pp;
			if (j->not_before_ns > now) {
				if (!next_ns || j->not_before_ns < next_ns)
					next_ns = j->not_before_ns;
				pp = &j->next;
				continue;
			}
			*pp = j->next;
			ret = start_job(f, j);
			if (ret) {
				j->err = ret == -ENOMEM ? -ENOMEM : -EIO;
				fetch_job_deliver(f, j);
			}
		}
		curl_multi_perform(f->multi, &running);
		while ((msg = curl_multi_info_read(f->multi, &running))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
			finish_transfer(f, j, msg->data.result);
		}
		/* Finished transfers may have freed slots or queued retries: go round again. */
		if (f->ready && f->nr_active < f->max_transfers) {
			uint64_t soonest = UINT64_MAX;

			for (j = f->ready; j; j = j->next)
				if (j->not_before_ns < soonest)
					soonest = j->not_before_ns;
			now = fetch_now_ns();
			if (soonest <= now)
				continue;
			if ((soonest - now) / 1000000 < (uint64_t)timeout_ms)
				timeout_ms = (int)((soonest - now) / 1000000) + 1;
		}
		curl_multi_poll(f->multi, NULL, 0, timeout_ms, NULL);
	}
	fail_all(f);
	return NULL;
}

/* --- start and stop --- */

int fetch_curl_start(struct fetcher *f)
{
	f->idle_easy = calloc(f->max_transfers, sizeof(*f->idle_easy));
	f->multi = curl_multi_init();
	if (!f->idle_easy || !f->multi)
		return -ENOMEM;
	curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->max_transfers);
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->max_transfers);
	if (pthread_create(&f->curl_thread, NULL, curl_thread_main, f))
		return -EAGAIN;
	f->have_curl_thread = true;
	return 0;
}

void fetch_curl_wake(struct fetcher *f)
{
	if (f->multi)
		curl_multi_wakeup(f->multi);
}

void fetch_curl_stop(struct fetcher *f)
{
	if (!f->have_curl_thread)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop_curl = true;
	pthread_mutex_unlock(&f->lock);
	curl_multi_wakeup(f->multi);
	pthread_join(f->curl_thread, NULL);
	f->have_curl_thread = false;
}

void fetch_curl_free(struct fetcher *f)
{
	for (unsigned i = 0; i < f->nr_idle_easy; i++)
		curl_easy_cleanup(f->idle_easy[i]);
	free(f->idle_easy);
	if (f->multi)
		curl_multi_cleanup(f->multi);
}
