/* Parsing helpers of the command line (see cli.h): sizes, durations, fstab options and the
 * mount table. Pure functions apart from reading /proc/self/mountinfo. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mount/cli.h"

int cli_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTP";
	unsigned long long whole;
	double frac = 0, scale = 1;
	const char *p = s;
	char *end;
	int shift = 0;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	whole = strtoull(p, &end, 10);
	if (errno)
		return -ERANGE;
	p = end;
	if (*p == '.') {
		double d = 0.1;

		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p)) {
			frac += (*p - '0') * d;
			d /= 10;
			p++;
		}
	}
	if (*p) {
		const char *u = strchr(units, toupper((unsigned char)*p));

		if (!u)
			return -EINVAL;
		shift = 10 * (int)(u - units + 1);
		p++;
		if (!strcmp(p, "iB") || !strcmp(p, "B") || !strcmp(p, "b"))
			p += strlen(p);
		if (*p)
			return -EINVAL;
	} else if (frac) {
		return -EINVAL; /* a fraction of a byte */
	}
	scale = ldexp(1.0, shift);
	if ((double)whole * scale + frac * scale >= 18446744073709551615.0)
		return -ERANGE;
	if (shift && whole > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = ((uint64_t)whole << shift) + (uint64_t)(frac * scale);
	return 0;
}

int cli_parse_duration(const char *s, double *out)
{
	double v, mul = 1;
	char *end;

	if (!s || !*s)
		return -EINVAL;
	if (!strcmp(s, "never") || !strcmp(s, "-1")) {
		*out = -1;
		return 0;
	}
	if (!isdigit((unsigned char)*s) && *s != '.')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || !isfinite(v) || v < 0)
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 's':
			mul = 1;
			break;
		case 'm':
			mul = 60;
			break;
		case 'h':
			mul = 3600;
			break;
		case 'd':
			mul = 86400;
			break;
		default:
			return -EINVAL;
		}
		if (end[1])
			return -EINVAL;
	}
	*out = v * mul;
	return 0;
}

void cli_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

static const char *const ignored_opts[] = {
	"ro",
	"rw",
	"nodev",
	"nosuid",
	"noexec",
	"dev",
	"suid",
	"exec",
	"_netdev",
	"noauto",
	"auto",
	"user",
	"users",
	"nouser",
	"owner",
	"defaults",
	"nofail",
	"async",
	"sync",
	"atime",
	"noatime",
	"relatime",
	"norelatime",
	"strictatime",
	"lazytime",
	"nolazytime",
	"diratime",
	"nodiratime",
	"silent",
	"loud",
	"nouser_xattr",
	"user_xattr",
	NULL,
};

/* fstab names (underscores, as fstab has no dashes by habit) to `ferry mount` options. */
static const struct {
	const char *name;
	const char *arg;
	bool takes_value;
} mapped_opts[] = {
	{ "cache_dir", "--cache-dir", true },
	{ "cache_size", "--cache-size", true },
	{ "chunk_size", "--chunk-size", true },
	{ "ca_file", "--ca-file", true },
	{ "metadata_ttl", "--metadata-ttl", true },
	{ "max_transfers", "--max-transfers", true },
	{ "dir_readahead", "--dir-readahead", true },
	{ "stall_timeout", "--stall-timeout", true },
	{ "endpoint", "--endpoint", true },
	{ "region", "--region", true },
	{ "profile", "--profile", true },
	{ "addressing", "--addressing", true },
	{ "no_sign_request", "--no-sign-request", false },
	{ "allow_outside_symlinks", "--allow-outside-symlinks", false },
	{ "shared_cache", "--shared-cache", true },
	{ "shared_endpoint", "--shared-endpoint", true },
	{ "shared_region", "--shared-region", true },
	{ "shared_profile", "--shared-profile", true },
	{ "shared_write_memory", "--shared-write-memory", true },
	{ "metrics_addr", "--metrics-addr", true },
	{ "verbose", "-v", false },
};

static int push(char **argv, int *argc, int max, const char *s)
{
	if (*argc >= max)
		return -E2BIG;
	argv[*argc] = strdup(s);
	if (!argv[*argc])
		return -ENOMEM;
	(*argc)++;
	return 0;
}

int cli_fstab_to_args(const char *opts, char **argv, int *argc, int max, char *err, size_t errlen)
{
	char *copy, *save = NULL, *tok, fuse[4096] = "";
	int ret = 0;

	if (!opts)
		return 0;
	copy = strdup(opts);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok && !ret; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		size_t klen = eq ? (size_t)(eq - tok) : strlen(tok);
		bool done = false;

		for (int i = 0; ignored_opts[i]; i++)
			if (!strcmp(tok, ignored_opts[i]))
				done = true;
		if (!strncmp(tok, "x-", 2) || !strncmp(tok, "comment=", 8))
			done = true;
		for (size_t i = 0; !done && i < sizeof(mapped_opts) / sizeof(mapped_opts[0]); i++) {
			if (strlen(mapped_opts[i].name) != klen ||
				strncmp(tok, mapped_opts[i].name, klen))
				continue;
			done = true;
			if (mapped_opts[i].takes_value && (!eq || !eq[1])) {
				snprintf(err, errlen, "option '%s' needs a value (%s=...)",
					mapped_opts[i].name, mapped_opts[i].name);
				ret = -EINVAL;
			} else if (!mapped_opts[i].takes_value && eq) {
				snprintf(err, errlen, "option '%s' takes no value",
					mapped_opts[i].name);
				ret = -EINVAL;
			} else {
				ret = push(argv, argc, max, mapped_opts[i].arg);
				if (!ret && eq)
					ret = push(argv, argc, max, eq + 1);
			}
		}
		if (done || ret)
			continue;
		if (strlen(fuse) + strlen(tok) + 2 > sizeof(fuse)) {
			snprintf(err, errlen, "too many options");
			ret = -E2BIG;
			break;
		}
		if (fuse[0])
			strcat(fuse, ",");
		strcat(fuse, tok);
	}
	if (!ret && fuse[0]) {
		ret = push(argv, argc, max, "-o");
		if (!ret)
			ret = push(argv, argc, max, fuse);
	}
	if (ret && !err[0])
		snprintf(err, errlen, "%s", strerror(-ret));
	free(copy);
	return ret;
}

void cli_mountinfo_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
			s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

bool cli_is_mount_point(const char *path, char *fstype, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	/* id parent maj:min root mountpoint options [optional...] - fstype source super */
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *field[5], *dash;
		int i;

		dash = strstr(line, " - ");
		for (i = 0; i < 5; i++) {
			field[i] = strtok_r(i ? NULL : line, " ", &save);
			if (!field[i])
				break;
		}
		if (i < 5)
			continue;
		cli_mountinfo_unescape(field[4]);
		if (strcmp(field[4], path))
			continue;
		found = true; /* the last match is the top mount: keep reading */
		if (fstype && len && dash) {
			char *t = dash + 3, *sp = strchr(t, ' ');

			if (sp)
				*sp = '\0';
			snprintf(fstype, len, "%s", t);
		}
	}
	free(line);
	fclose(f);
	return found;
}

double cli_json_num(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	return p ? strtod(p + strlen(pat), NULL) : 0;
}

static bool json_has(const char *json, const char *key)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	return strstr(json, pat) != NULL;
}

static bool json_true(const char *json, const char *key)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"%s\":true", key);
	return strstr(json, pat) != NULL;
}

/* The value of a string field ("" when absent) into buf. */
static void json_str(const char *json, const char *key, char *buf, size_t len)
{
	char pat[64];
	const char *p, *e;

	buf[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(json, pat);
	if (!p)
		return;
	p += strlen(pat);
	e = strchr(p, '"');
	if (e)
		snprintf(buf, len, "%.*s", (int)(e - p), p);
}

/* The shared tier's line: its state, what it served, what was put and dropped. */
static void cli_print_tier(FILE *out, const char *json)
{
	char state[16], a[32], b[32];

	json_str(json, "tier_state", state, sizeof(state));
	if (!state[0] || !strcmp(state, "off")) {
		fprintf(out, "%-16s off\n", "shared tier");
		return;
	}
	cli_format_bytes((uint64_t)cli_json_num(json, "tier_bytes"), a, sizeof(a));
	cli_format_bytes((uint64_t)cli_json_num(json, "tier_put_bytes"), b, sizeof(b));
	fprintf(out,
		"%-16s %s: %.0f hits (%s), %.0f misses, %.0f rejected, %.0f errors; "
		"%.0f puts (%s), %.0f dropped, %.0f queued\n",
		"shared tier", state, cli_json_num(json, "tier_hits"), a,
		cli_json_num(json, "tier_misses"), cli_json_num(json, "tier_rejected"),
		cli_json_num(json, "tier_errors"), cli_json_num(json, "tier_puts"), b,
		cli_json_num(json, "tier_puts_dropped"), cli_json_num(json, "tier_put_queued"));
}

void cli_print_stats(FILE *out, const char *json, const char *source)
{
	double hits = cli_json_num(json, "hits"), misses = cli_json_num(json, "misses");
	char a[32], b[32];

	fprintf(out, "%-16s %s%s\n", "source", source,
		json_true(json, "offline") ? " (offline)" : "");
	cli_format_bytes((uint64_t)cli_json_num(json, "cache_used_bytes"), a, sizeof(a));
	if (cli_json_num(json, "cache_max_bytes") > 0) {
		cli_format_bytes((uint64_t)cli_json_num(json, "cache_max_bytes"), b, sizeof(b));
		fprintf(out, "%-16s %s of %s (%.1f%%)\n", "cache used", a, b,
			100.0 * cli_json_num(json, "cache_used_bytes") /
				cli_json_num(json, "cache_max_bytes"));
	} else {
		fprintf(out, "%-16s %s (no limit)\n", "cache used", a);
	}
	if (json_has(json, "degraded"))
		fprintf(out, "%-16s %s\n", "cache state",
			json_true(json, "degraded")
				? "degraded: the cache volume kept failing, reads bypass the cache"
				: "ok");
	fprintf(out, "%-16s %.0f\n", "objects cached", cli_json_num(json, "nr_objects"));
	fprintf(out, "%-16s %.0f\n", "hits", hits);
	fprintf(out, "%-16s %.0f\n", "misses", misses);
	if (hits + misses > 0)
		fprintf(out, "%-16s %.1f%%\n", "hit rate", 100.0 * hits / (hits + misses));
	else
		fprintf(out, "%-16s -\n", "hit rate");
	cli_format_bytes((uint64_t)cli_json_num(json, "bytes_fetched"), a, sizeof(a));
	fprintf(out, "%-16s %s in %.0f requests\n", "bytes fetched", a,
		cli_json_num(json, "requests"));
	cli_format_bytes((uint64_t)cli_json_num(json, "fetch_bytes_per_s"), a, sizeof(a));
	fprintf(out, "%-16s %s/s\n", "fetch throughput", a);
	fprintf(out, "%-16s %.0f files\n", "dir readahead",
		cli_json_num(json, "dir_readahead_files"));
	fprintf(out, "%-16s %.0f\n", "evictions", cli_json_num(json, "evictions"));
	fprintf(out, "%-16s %.0f fetch, %.0f read, %.0f checksum\n", "errors",
		cli_json_num(json, "fetch_errors"), cli_json_num(json, "read_errors"),
		cli_json_num(json, "verify_failures"));
	if (json_has(json, "disk_errors"))
		fprintf(out, "%-16s %.0f\n", "disk errors", cli_json_num(json, "disk_errors"));
	cli_print_tier(out, json);
}

void cli_format_progress(char *buf, size_t len, uint64_t done_bytes, uint64_t total_bytes,
	double elapsed_s, bool counting)
{
	static const char bar[] = "==============================";
	const int width = (int)sizeof(bar) - 1;
	double frac = total_bytes ? (double)done_bytes / (double)total_bytes : 1;
	char a[32], b[32], r[32];
	int fill;

	if (frac > 1)
		frac = 1;
	fill = (int)(frac * width);
	cli_format_bytes(done_bytes, a, sizeof(a));
	cli_format_bytes(total_bytes, b, sizeof(b));
	cli_format_bytes(elapsed_s > 0 ? (uint64_t)((double)done_bytes / elapsed_s) : 0, r,
		sizeof(r));
	snprintf(buf, len, "[%.*s%*s] %3.0f%%  %s / %s%s  %s/s", fill, bar, width - fill, "",
		frac * 100, a, b, counting ? "+" : "", r);
}

/* Splits one mountinfo line (modified) into m; false when it is not one.
 * id parent maj:min root mountpoint options [optional...] - fstype source super */
static bool parse_mountinfo_line(char *line, struct cli_mount *m)
{
	char *save = NULL, *field[5], *dash, *type, *sp;
	int i;

	dash = strstr(line, " - ");
	if (!dash)
		return false;
	*dash = '\0';
	type = dash + 3;
	sp = strchr(type, ' ');
	if (sp)
		*sp = '\0';
	for (i = 0; i < 5; i++) {
		field[i] = strtok_r(i ? NULL : line, " ", &save);
		if (!field[i])
			return false;
	}
	if (sscanf(field[2], "%u:%u", &m->major, &m->minor) != 2)
		return false;
	cli_mountinfo_unescape(field[3]);
	cli_mountinfo_unescape(field[4]);
	snprintf(m->root, sizeof(m->root), "%s", field[3]);
	snprintf(m->mount_point, sizeof(m->mount_point), "%s", field[4]);
	snprintf(m->fstype, sizeof(m->fstype), "%s", type);
	return true;
}

bool cli_mount_of_dev(FILE *mountinfo, unsigned int major, unsigned int minor, struct cli_mount *m)
{
	struct cli_mount *cur = malloc(sizeof(*cur));
	char *line = NULL;
	size_t cap = 0;
	bool found = false, found_root = false;

	if (!cur)
		return false;
	while (getline(&line, &cap, mountinfo) > 0) {
		bool is_root;

		if (!parse_mountinfo_line(line, cur) || cur->major != major || cur->minor != minor)
			continue;
		is_root = !strcmp(cur->root, "/");
		if (found_root && !is_root)
			continue;
		*m = *cur;
		found = true;
		found_root = is_root;
	}
	free(line);
	free(cur);
	return found;
}

bool cli_mount_containing(FILE *mountinfo, const char *abspath, struct cli_mount *m)
{
	struct cli_mount *cur = malloc(sizeof(*cur));
	char *line = NULL;
	size_t cap = 0, best = 0;
	bool found = false;

	if (!cur)
		return false;
	while (getline(&line, &cap, mountinfo) > 0) {
		size_t n;

		if (!parse_mountinfo_line(line, cur))
			continue;
		n = strlen(cur->mount_point);
		if (strcmp(cur->mount_point, "/") && (strncmp(abspath, cur->mount_point, n) ||
							     (abspath[n] && abspath[n] != '/')))
			continue;
		if (found && n < best)
			continue;
		*m = *cur;
		best = n;
		found = true;
	}
	free(line);
	free(cur);
	return found;
}

int cli_lexical_abspath(const char *cwd, const char *path, char *out, size_t len)
{
	size_t n = 0;

	if (len < 2)
		return -ENAMETOOLONG;
	out[0] = '\0';
	/* Each component of cwd (when path is relative), then of path, onto out. */
	for (int part = path[0] == '/' ? 1 : 0; part < 2; part++) {
		const char *p = part ? path : cwd;

		while (*p) {
			const char *end = strchrnul(p, '/');
			size_t k = (size_t)(end - p);

			if (k == 2 && p[0] == '.' && p[1] == '.') {
				while (n > 0 && out[n - 1] != '/')
					n--;
				if (n > 0)
					n--;
				out[n] = '\0';
			} else if (k && !(k == 1 && p[0] == '.')) {
				if (n + 1 + k + 1 > len)
					return -ENAMETOOLONG;
				out[n++] = '/';
				memcpy(out + n, p, k);
				n += k;
				out[n] = '\0';
			}
			p = *end ? end + 1 : end;
		}
	}
	if (!n)
		strcpy(out, "/");
	return 0;
}

void cli_shell_quote(const char *s, char *out, size_t len)
{
	size_t n = 0;
	bool plain = *s != '\0';

	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/._-+:=@,%", *p))
			plain = false;
	if (plain || len < 3) {
		snprintf(out, len, "%s", plain ? s : "");
		return;
	}
	/* 'it'\''s': a quote ends the quoted part, an escaped quote, a quote opens the next. */
	out[n++] = '\'';
	for (; *s && n + 6 < len; s++) {
		if (*s == '\'') {
			memcpy(out + n, "'\\''", 4);
			n += 4;
		} else {
			out[n++] = *s;
		}
	}
	out[n++] = '\'';
	out[n] = '\0';
}
