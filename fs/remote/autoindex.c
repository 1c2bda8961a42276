/* Reads the HTML directory pages of nginx (autoindex) and Apache (mod_autoindex: plain list,
 * FancyIndexing <pre> and HTMLTable) into entries for the HTTP backend's listings. It reads the
 * links, not the layout: each <a href> is an entry, and the text after it up to the end of the
 * line (date, time, size) gives what the page knows about it. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fs/log.h"
#include "fs/remote/autoindex.h"
#include "fs/remote/url.h"

static const char *find_ci(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);

	for (; p + n <= end; p++)
		if (!strncasecmp(p, needle, n))
			return p;
	return NULL;
}

/* Decodes the HTML character references a server may put in an attribute. */
static char *html_unescape(const char *s, size_t len)
{
	char *o = malloc(len + 1);
	size_t i, n = 0;

	if (!o)
		return NULL;
	for (i = 0; i < len; i++) {
		const char *semi;
		size_t el;

		if (s[i] != '&' || !(semi = memchr(s + i, ';', len - i)) || semi - (s + i) > 10) {
			o[n++] = s[i];
			continue;
		}
		el = (size_t)(semi - (s + i)) + 1;
		if (el == 5 && !strncmp(s + i, "&amp;", 5))
			o[n++] = '&';
		else if (el == 4 && !strncmp(s + i, "&lt;", 4))
			o[n++] = '<';
		else if (el == 4 && !strncmp(s + i, "&gt;", 4))
			o[n++] = '>';
		else if (el == 6 && !strncmp(s + i, "&quot;", 6))
			o[n++] = '"';
		else if (el == 6 && !strncmp(s + i, "&apos;", 6))
			o[n++] = '\'';
		else if (el > 3 && s[i + 1] == '#') {
			char *e;
			bool hex = s[i + 2] == 'x' || s[i + 2] == 'X';
			unsigned long v = strtoul(s + i + (hex ? 3 : 2), &e, hex ? 16 : 10);

			if (e != semi || v == 0 || v > 0x7f) { /* hrefs are percent-encoded ASCII */
				o[n++] = s[i];
				continue;
			}
			o[n++] = (char)v;
		} else {
			o[n++] = s[i];
			continue;
		}
		i += el - 1;
	}
	o[n] = '\0';
	return o;
}

static bool is_digits(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return false;
	for (i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int month_of(const char *s)
{
	static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int m;

	for (m = 0; m < 12; m++)
		if (!strncasecmp(s, names + 3 * m, 3))
			return m;
	return -1;
}

/* "23-Jan-2024" (nginx, old Apache) or "2024-01-23" (Apache 2.4) and "10:00". */
static time_t parse_date(const char *d, size_t dl, const char *t, size_t tl)
{
	struct tm tm = { 0 };
	int y, mo, day, h, mi;

	if (tl < 5 || !isdigit((unsigned char)t[0]) || !isdigit((unsigned char)t[1]) ||
		t[2] != ':' || !isdigit((unsigned char)t[3]) || !isdigit((unsigned char)t[4]))
		return 0;
	h = (t[0] - '0') * 10 + (t[1] - '0');
	mi = (t[3] - '0') * 10 + (t[4] - '0');
	if (dl == 11 && d[2] == '-' && d[6] == '-' && is_digits(d, 2) && is_digits(d + 7, 4)) {
		day = atoi(d);
		mo = month_of(d + 3);
		y = atoi(d + 7);
	} else if (dl == 10 && d[4] == '-' && d[7] == '-' && is_digits(d, 4) &&
		   is_digits(d + 5, 2) && is_digits(d + 8, 2)) {
		y = atoi(d);
		mo = atoi(d + 5) - 1;
		day = atoi(d + 8);
	} else {
		return 0;
	}
	if (mo < 0 || mo > 11 || day < 1 || day > 31 || h > 23 || mi > 59 || y < 1970)
		return 0;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo;
	tm.tm_mday = day;
	tm.tm_hour = h;
	tm.tm_min = mi;
	return timegm(&tm);
}

#define MAX_TOKENS 16

/* Reads the date, time and size columns from the text after a link, tags dropped. */
static void parse_tail(const char *p, const char *end, struct autoindex_entry *e)
{
	const char *tok[MAX_TOKENS];
	size_t tl[MAX_TOKENS];
	int nr = 0, i;

	while (p < end && nr < MAX_TOKENS) {
		if (*p == '<') {
			const char *gt = memchr(p, '>', (size_t)(end - p));

			p = gt ? gt + 1 : end;
			continue;
		}
		if (isspace((unsigned char)*p)) {
			p++;
			continue;
		}
		if (*p == '&') { /* &nbsp; and friends separate columns */
			const char *semi = memchr(p, ';', (size_t)(end - p));

			if (semi && semi - p < 10) {
				p = semi + 1;
				continue;
			}
		}
		tok[nr] = p;
		while (p < end && *p != '<' && *p != '&' && !isspace((unsigned char)*p))
			p++;
		tl[nr] = (size_t)(p - tok[nr]);
		nr++;
	}
	for (i = 1; i < nr; i++) {
		if (tl[i] < 5 || tok[i][2] != ':')
			continue;
		e->mtime = parse_date(tok[i - 1], tl[i - 1], tok[i], tl[i]);
		if (!e->mtime)
			continue;
		if (i + 1 < nr && is_digits(tok[i + 1], tl[i + 1]) && tl[i + 1] < 20) {
			e->size = strtoull(tok[i + 1], NULL, 10);
			e->size_exact = true;
		}
		return;
	}
}

/* Skips links that are not entries of this directory: sort links, fragments, absolute paths
 * (Apache's parent link), other sites, and the parent. */
static bool href_is_entry(const char *h, bool dot_slash)
{
	const char *colon = strchr(h, ':'), *slash = strchr(h, '/');

	if (!*h || *h == '?' || *h == '#' || *h == '/')
		return false;
	if (!dot_slash && colon && (!slash || colon < slash))
		return false; /* a scheme: servers write "./a:b" for names with a colon */
	if (!strcmp(h, "..") || !strncmp(h, "../", 3))
		return false;
	return true;
}

int autoindex_parse(const char *html, size_t len, autoindex_cb cb, void *arg)
{
	const char *p = html, *end = html + len;
	char *prev = NULL;
	int ret = 0;

	while ((p = find_ci(p, end, "<a"))) {
		const char *tag_end, *h, *hv, *hv_end, *close, *tail_end, *next_a;
		char *href = NULL, *name = NULL, *q;
		struct autoindex_entry e = { 0 };
		size_t nl;

		if (p + 2 >= end || !isspace((unsigned char)p[2])) {
			p += 2;
			continue;
		}
		tag_end = memchr(p, '>', (size_t)(end - p));
		if (!tag_end)
			break;
		h = find_ci(p, tag_end, "href");
		p = tag_end + 1;
		if (!h)
			continue;
		h += 4;
		while (h < tag_end && isspace((unsigned char)*h))
			h++;
		if (h == tag_end || *h++ != '=')
			continue;
		while (h < tag_end && isspace((unsigned char)*h))
			h++;
		if (h < tag_end && (*h == '"' || *h == '\'')) {
			hv = h + 1;
			hv_end = memchr(hv, *h, (size_t)(tag_end - hv));
			if (!hv_end)
				continue;
		} else {
			hv = h;
			for (hv_end = hv; hv_end < tag_end && !isspace((unsigned char)*hv_end);
				hv_end++)
				;
		}
		href = html_unescape(hv, (size_t)(hv_end - hv));
		if (!href) {
			ret = -ENOMEM;
			break;
		}
		close = find_ci(p, end, "</a>");
		close = close ? close + 4 : p;
		tail_end = memchr(close, '\n', (size_t)(end - close));
		if (!tail_end)
			tail_end = end;
		next_a = find_ci(close, tail_end, "<a");
		if (next_a)
			tail_end = next_a;
		p = close;

		q = href;
		while (q[0] == '.' && q[1] == '/')
			q += 2;
		if (!href_is_entry(q, q != href))
			goto next;
		nl = strlen(q);
		e.type = REMOTE_FILE;
		if (nl && q[nl - 1] == '/') {
			e.type = REMOTE_DIR;
			q[--nl] = '\0';
		}
		if (url_decode(q, nl, &name) || !url_name_is_safe(name, strlen(name))) {
			log_warn("skipping unsafe name in directory listing: '%.300s'", href);
			goto next;
		}
		if (prev && !strcmp(prev, name)) /* an icon linked like its name (IconsAreLinks) */
			goto next;
		e.name = name;
		parse_tail(close, tail_end, &e);
		if (e.type == REMOTE_DIR)
			e.size_exact = false, e.size = 0;
		ret = cb(arg, &e);
		free(prev);
		prev = name;
		name = NULL;
	next:
		free(name);
		free(href);
		if (ret)
			break;
	}
	free(prev);
	return ret;
}
