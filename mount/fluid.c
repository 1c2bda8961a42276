/* ferry fluid-mount: the entry program of ferry's Fluid ThinRuntime image. Reads the mount
 * description Fluid writes into the FUSE container (/etc/fluid/config/config.json: the
 * Dataset's mounts with their options, the ThinRuntime's fuse options, the targetPath) and
 * runs `ferry mount -f` on it, in this process, so the container lives as long as the mount.
 * The JSON's shape is Fluid's pkg/ddc/thin Config (transform_config.go); docs/kubernetes.md. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "fs/remote/url.h"
#include "mount/cli.h"
#include "mount/cmd.h"

#define FLUID_CONFIG     "/etc/fluid/config/config.json"
#define FLUID_CONFIG_OLD "/etc/fluid/config.json" /* before Fluid 1.1 */
/* Where Fluid mounts the Secrets of a Dataset's encryptOptions (configmap storage, the
 * default): such an option's value is the path of the file holding the secret. */
#define FLUID_SECRETS "/etc/fluid/secrets"
/* ferry mount's default cache dir, where the profile mounts the node's cache hostPath */
#define FLUID_CACHE_ROOT "/var/cache/ferry"
/* Fluid's targetPath for a ThinRuntime: /runtime-mnt/thin/NAMESPACE/NAME/thin-fuse
 * (pkg/ddc/thin: the runtime's mount root, then namespace and name) */
#define FLUID_TARGET_ROOT "/runtime-mnt/thin/"

/* What an option of the Dataset or the ThinRuntime becomes. */
enum opt_kind {
	K_ARG,    /* ferry mount --FLAG VALUE */
	K_BOOL,   /* ferry mount --FLAG, for "", "true"; nothing for "false" */
	K_ENV,    /* an AWS_* variable of the mount (a credential) */
	K_MINIO,  /* minio-url: the endpoint of a minio:// source */
	K_IGNORE, /* said by Fluid, meaningless for ferry */
};

/* Option names are matched with '-' and '_' alike and case folded: Fluid's examples write
 * minio-url, ferry's fstab writes cache_size. */
struct fluid_opt {
	const char *name;
	enum opt_kind kind;
	const char *to; /* the flag or the variable */
};
/* clang-format 14 would pack two or three entries a line. */
/* clang-format off */
static const struct fluid_opt fluid_opts[] = {
	{ "cache_dir", K_ARG, "--cache-dir" },
	{ "cache_size", K_ARG, "--cache-size" },
	{ "chunk_size", K_ARG, "--chunk-size" },
	{ "ca_file", K_ARG, "--ca-file" },
	{ "metadata_ttl", K_ARG, "--metadata-ttl" },
	{ "max_transfers", K_ARG, "--max-transfers" },
	{ "dir_readahead", K_ARG, "--dir-readahead" },
	{ "stall_timeout", K_ARG, "--stall-timeout" },
	{ "metrics_addr", K_ARG, "--metrics-addr" },
	{ "endpoint", K_ARG, "--endpoint" },
	{ "region", K_ARG, "--region" },
	{ "profile", K_ARG, "--profile" },
	{ "addressing", K_ARG, "--addressing" },
	{ "shared_cache", K_ARG, "--shared-cache" },
	{ "shared_endpoint", K_ARG, "--shared-endpoint" },
	{ "shared_region", K_ARG, "--shared-region" },
	{ "shared_profile", K_ARG, "--shared-profile" },
	{ "shared_write_memory", K_ARG, "--shared-write-memory" },
	{ "no_sign_request", K_BOOL, "--no-sign-request" },
	{ "allow_outside_symlinks", K_BOOL, "--allow-outside-symlinks" },
	{ "verbose", K_BOOL, "--verbose" },
	{ "access_key_id", K_ENV, "AWS_ACCESS_KEY_ID" },
	{ "aws_access_key_id", K_ENV, "AWS_ACCESS_KEY_ID" },
	{ "minio_access_key", K_ENV, "AWS_ACCESS_KEY_ID" },
	{ "access_key_secret", K_ENV, "AWS_SECRET_ACCESS_KEY" },
	{ "secret_access_key", K_ENV, "AWS_SECRET_ACCESS_KEY" },
	{ "aws_secret_access_key", K_ENV, "AWS_SECRET_ACCESS_KEY" },
	{ "minio_access_secret", K_ENV, "AWS_SECRET_ACCESS_KEY" },
	{ "session_token", K_ENV, "AWS_SESSION_TOKEN" },
	{ "aws_session_token", K_ENV, "AWS_SESSION_TOKEN" },
	{ "minio_url", K_MINIO, "--endpoint" },
	{ "ro", K_IGNORE, NULL }, /* a ferry mount is always read-only */
};
/* clang-format on */
#define NR_FLUID_OPTS (sizeof(fluid_opts) / sizeof(fluid_opts[0]))

/* One mount being put together. val[i] is fluid_opts[i]'s value (NULL: not given), owned;
 * secret[i] the file it was read from, if any (borrowed from the JSON). */
struct fluid_mount {
	char *val[NR_FLUID_OPTS];
	const char *secret[NR_FLUID_OPTS];
	char *source;
	char *target;
	const char *secrets_dir;
	const char *local_root; /* --local-root: local:// sources must lie under it; NULL: none */
	json_t *json;           /* the parsed CONFIG: secret[] points into it */
};

/* A line on stderr with its control characters escaped (\n as \x0a): option keys, field
 * names and accessModes come from the JSON, and a raw newline in one would forge a line. */
static void vsay(const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	fputs("ferry fluid-mount: ", stderr);
	for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			fprintf(stderr, "\\x%02x", *p);
		else
			fputc(*p, stderr);
	fputc('\n', stderr);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	return 1;
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ferry fluid-mount [--dry-run] [--secrets-dir DIR] [--local-root DIR] "
		"[CONFIG]\n\n"
		"Mounts the source a Fluid ThinRuntime describes in CONFIG (default\n"
		"  " FLUID_CONFIG ", else " FLUID_CONFIG_OLD ")\n"
		"at its targetPath with `ferry mount -f -o allow_other`, in the foreground.\n\n"
		"mountPoint: http(s)://..., s3://BUCKET/PREFIX, minio://BUCKET/PREFIX (the endpoint\n"
		"from minio-url, path addressing) or local:///PATH (only under --local-root).\n"
		"Options (the Dataset's, then the ThinRuntime's fuse options, which win; '-' or '_'):\n"
		"  cache-dir (default " FLUID_CACHE_ROOT "/fluid/NAMESPACE/NAME for Fluid's\n"
		"  targetPath " FLUID_TARGET_ROOT
		"NAMESPACE/NAME/...), cache-size, chunk-size, ca-file,\n"
		"  metadata-ttl, max-transfers, dir-readahead, stall-timeout, metrics-addr,\n"
		"  endpoint, region, profile, addressing, shared-cache, shared-endpoint,\n"
		"  shared-region, shared-profile,\n"
		"  shared-write-memory: as ferry mount's --OPTION VALUE;\n"
		"  no-sign-request, verbose: true or false (allow-outside-symlinks: only false);\n"
		"  access-key-id, access-key-secret, session-token (also aws-access-key-id, ...,\n"
		"  minio-access-key, minio-access-secret): AWS_* variables of the mount; such a\n"
		"  value that is a path under the secrets dir is read from that file.\n"
		"Unknown options are named on stderr, one line each, and ignored.\n\n"
		"  -n, --dry-run        print the command it would run (credentials as <secret>)\n"
		"  --secrets-dir DIR    where Fluid mounts the Dataset's secrets (" FLUID_SECRETS
		")\n"
		"  --local-root DIR     allow local:///PATH sources under DIR (never the cache)\n"
		"  -h, --help           this text\n");
}

static int opt_index(const char *key)
{
	char norm[64];
	size_t n = strlen(key);

	if (n >= sizeof(norm))
		return -1;
	for (size_t i = 0; i <= n; i++) {
		char c = key[i];

		norm[i] = c == '-' ? '_' : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	for (size_t i = 0; i < NR_FLUID_OPTS; i++)
		if (!strcmp(norm, fluid_opts[i].name))
			return (int)i;
	return -1;
}

static bool under_dir(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	while (n && dir[n - 1] == '/')
		n--;
	return !strncmp(path, dir, n) && path[n] == '/';
}

/* A secret's value from the file Fluid mounted (path, under dir), without its trailing
 * newline (kubectl create secret --from-file keeps the file's). A path that leads out of dir
 * (.., a symlink) is refused: whoever writes the Dataset must not have the FUSE pod, which
 * runs as root, read its other files and send them as a credential. The Secret volume's own
 * symlinks (KEY -> ..data/KEY -> ..TIMESTAMP/KEY) stay inside. */
static int read_secret(const char *key, const char *path, const char *dir, char **out)
{
	char buf[8192 + 2], real[PATH_MAX], real_dir[PATH_MAX];
	const char *bad;
	size_t n;
	FILE *f;

	if (!realpath(path, real))
		return fail("option '%s': cannot read %s: %s", key, path, strerror(errno));
	if (!realpath(dir, real_dir))
		return fail("secrets dir %s: %s", dir, strerror(errno));
	if (!under_dir(real, real_dir))
		return fail("option '%s': %s leads out of the secrets dir %s", key, path, dir);
	f = fopen(real, "re");
	if (!f)
		return fail("option '%s': cannot read %s: %s", key, path, strerror(errno));
	/* one byte more than 8 KiB: reading exactly a file's size does not set EOF */
	n = fread(buf, 1, sizeof(buf) - 1, f);
	bad = ferror(f) ? "read error" : n > 8192 ? "larger than 8 KiB" : NULL;
	fclose(f);
	if (bad)
		return fail("option '%s': %s: %s", key, path, bad);
	buf[n] = '\0';
	if (strlen(buf) != n)
		return fail("option '%s': %s holds a NUL byte", key, path);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	*out = strdup(buf);
	return *out ? 0 : fail("out of memory");
}

/* Takes the options of one JSON object (where: how the error names it); a later call
 * replaces what an earlier one set. */
static int take_options(struct fluid_mount *m, json_t *opts, const char *where)
{
	const char *seen[NR_FLUID_OPTS] = { 0 }; /* the key that set each option here */
	const char *key;
	json_t *v;

	if (!opts || json_is_null(opts))
		return 0;
	if (!json_is_object(opts))
		return fail("%s: expected an object of strings", where);
	json_object_foreach(opts, key, v)
	{
		const char *s;
		int i;

		if (!json_is_string(v))
			return fail("%s.%s: expected a string", where, key);
		s = json_string_value(v);
		if (!strncmp(key, "fluid.fuse.", 11)) /* Fluid's own (fluid.fuse.hostvolume) */
			continue;
		i = opt_index(key);
		if (i < 0) {
			/* the value may be a secret: only the name is shown */
			warn("unknown option '%s' in %s, ignored", key, where);
			continue;
		}
		for (size_t j = 0; j < NR_FLUID_OPTS; j++) {
			if (seen[j] && (j == (size_t)i || (fluid_opts[i].kind == K_ENV &&
								  fluid_opts[j].kind == K_ENV &&
								  !strcmp(fluid_opts[j].to,
									  fluid_opts[i].to)))) {
				warn("%s: '%s' and '%s' set one option, the last one wins", where,
					seen[j], key);
				seen[j] = NULL;
			}
		}
		seen[i] = key;
		free(m->val[i]);
		m->val[i] = NULL;
		m->secret[i] = NULL;
		/* The Dataset's author picks the values. Only a credential is read from a file,
		 * and only from the secrets dir; any other option is what it says (ca-file is a
		 * path, endpoint a URL), never a file's content on a command line. */
		if (fluid_opts[i].kind != K_ENV && has_control(s))
			return fail("%s.%s: a control character in the value", where, key);
		if (fluid_opts[i].kind == K_BOOL &&
			!strcmp(fluid_opts[i].name, "allow_outside_symlinks") && strcmp(s, "false"))
			return fail(
				"%s.%s: not allowed from a Dataset (it would serve files outside "
				"the source)",
				where, key);
		if (fluid_opts[i].kind == K_ENV && under_dir(s, m->secrets_dir)) {
			if (read_secret(key, s, m->secrets_dir, &m->val[i]))
				return 1;
			m->secret[i] = s;
		} else if (!(m->val[i] = strdup(s))) {
			return fail("out of memory");
		}
		for (size_t j = 0; fluid_opts[i].kind == K_ENV && j < NR_FLUID_OPTS; j++) {
			/* aliases of one variable: the last one given wins */
			if (j != (size_t)i && fluid_opts[j].kind == K_ENV &&
				!strcmp(fluid_opts[j].to, fluid_opts[i].to)) {
				free(m->val[j]);
				m->val[j] = NULL;
				m->secret[j] = NULL;
			}
		}
		if (fluid_opts[i].kind == K_BOOL && m->val[i][0] && strcmp(m->val[i], "true") &&
			strcmp(m->val[i], "false"))
			return fail("%s.%s: expected true, false or nothing", where, key);
	}
	return 0;
}

static const char *opt_val(const struct fluid_mount *m, const char *name)
{
	for (size_t i = 0; i < NR_FLUID_OPTS; i++)
		if (m->val[i] && !strcmp(fluid_opts[i].name, name))
			return m->val[i];
	return NULL;
}

/* A local:// source is a path of the FUSE container, which is privileged and holds every
 * Dataset's cache (0444, allow_other): the Dataset's author, who may be any namespace's,
 * could serve any of it. Only under the operator's --local-root, by its real path, and never
 * the cache. */
static int check_local(const struct fluid_mount *m, const char *path)
{
	char real[PATH_MAX], root[PATH_MAX], cache[PATH_MAX];
	const char *cache_dir = opt_val(m, "cache_dir");

	if (!m->local_root)
		return fail("mountPoint local://%s: local sources are off (the operator allows "
			    "them under a directory with ferry fluid-mount --local-root DIR)",
			path);
	for (const char *p = path; (p = strstr(p, "..")); p += 2)
		if (p[-1] == '/' && (!p[2] || p[2] == '/'))
			return fail("mountPoint local://%s: '..' in the path", path);
	if (!realpath(m->local_root, root))
		return fail("--local-root %s: %s", m->local_root, strerror(errno));
	if (!realpath(path, real))
		return fail("mountPoint local://%s: %s", path, strerror(errno));
	if (strcmp(real, root) && !under_dir(real, root))
		return fail("mountPoint local://%s: not under --local-root %s", path,
			m->local_root);
	for (int i = 0; i < 2; i++) {
		const char *c = i ? cache_dir : FLUID_CACHE_ROOT;

		if (!c || !realpath(c, cache))
			continue;
		if (!strcmp(cache, root) || under_dir(cache, root) || under_dir(root, cache))
			return fail("--local-root %s: holds or lies in the cache dir %s",
				m->local_root, c);
	}
	return 0;
}

/* Without a cache-dir option, each Dataset caches in its own directory under the node's
 * cache root: ferry locks a source's cache dir, and two Datasets of one source on a node
 * would share it and the second FUSE pod fail. The names come from Fluid's targetPath;
 * a byte outside [A-Za-z0-9._-] becomes '_', a leading '.' too. */
static int default_cache_dir(struct fluid_mount *m)
{
	int i = opt_index("cache_dir");
	const char *p = m->target + strlen(FLUID_TARGET_ROOT);
	char dir[PATH_MAX];
	size_t n;

	if (m->val[i] || strncmp(m->target, FLUID_TARGET_ROOT, strlen(FLUID_TARGET_ROOT)))
		return 0;
	n = (size_t)snprintf(dir, sizeof(dir), "%s/fluid", FLUID_CACHE_ROOT);
	for (int part = 0; part < 2; part++) {
		size_t len = strcspn(p, "/");

		if (!len || !p[len] || n + len + 2 >= sizeof(dir))
			return 0; /* not Fluid's NAMESPACE/NAME/...: the default */
		dir[n++] = '/';
		for (size_t k = 0; k < len; k++) {
			char c = p[k];
			bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				  (c >= '0' && c <= '9') || c == '-' || c == '_' || (c == '.' && k);

			dir[n++] = ok ? c : '_';
		}
		p += len + 1;
	}
	dir[n] = '\0';
	m->val[i] = strdup(dir);
	return m->val[i] ? 0 : fail("out of memory");
}

/* mountPoint -> ferry's SOURCE: http(s):// and s3:// as they are, minio://B/P as s3://B/P
 * on the minio-url endpoint, local:///PATH as PATH. */
static int map_source(struct fluid_mount *m, const char *mp)
{
	const char *rest;

	if (!strncmp(mp, "http://", 7) || !strncmp(mp, "https://", 8) || !strncmp(mp, "s3://", 5)) {
		m->source = strdup(mp);
	} else if (!strncmp(mp, "minio://", 8)) {
		rest = mp + 8;
		if (!*rest || *rest == '/')
			return fail("mountPoint '%s': expected minio://BUCKET[/PREFIX]", mp);
		if (!opt_val(m, "minio_url") && !opt_val(m, "endpoint"))
			return fail("mountPoint '%s': a minio:// source needs the option minio-url "
				    "(or endpoint)",
				mp);
		if (asprintf(&m->source, "s3://%s", rest) < 0)
			m->source = NULL;
	} else if (!strncmp(mp, "local://", 8)) {
		rest = mp + 8;
		if (*rest != '/')
			return fail("mountPoint '%s': expected local:///ABSOLUTE/PATH", mp);
		if (check_local(m, rest))
			return 1;
		m->source = strdup(rest);
	} else {
		char *shown = url_redact(mp);

		fail("mountPoint '%s': ferry mounts http://, https://, s3://, minio:// and "
		     "local:// sources",
			shown ? shown : "?");
		free(shown);
		return 1;
	}
	return m->source ? 0 : fail("out of memory");
}

/* Reads and checks CONFIG into m; every problem is one line. */
static int parse_config(struct fluid_mount *m, const char *path)
{
	json_error_t jerr;
	json_t *root, *mounts, *mnt, *v;
	const char *key;
	int ret = 1;

	struct stat st;

	/* jansson reads a directory as an empty file */
	if (!stat(path, &st) && S_ISDIR(st.st_mode))
		return fail("%s: %s", path, strerror(EISDIR));
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line < 0 && access(path, R_OK))
			return fail("%s: %s", path, strerror(errno));
		if (jerr.line < 0) /* "unable to open PATH: ...", "... Is a directory" */
			return fail("%s", jerr.text);
		return fail("%s:%d:%d: not valid JSON: %s", path, jerr.line, jerr.column,
			jerr.text);
	}
	if (!json_is_object(root)) {
		fail("%s: expected a JSON object (Fluid's ThinRuntime config)", path);
		goto out;
	}
	json_object_foreach(root, key, v)
	{
		if (strcmp(key, "mounts") && strcmp(key, "targetPath") &&
			strcmp(key, "runtimeOptions") && strcmp(key, "accessModes") &&
			strcmp(key, "persistentVolumeAttrs") &&
			strcmp(key, "persistentVolumeMountOptions"))
			warn("unknown field '%s' in %s, ignored", key, path);
	}
	mounts = json_object_get(root, "mounts");
	if (!json_is_array(mounts)) {
		fail("%s: no \"mounts\" array (the Dataset's mounts)", path);
		goto out;
	}
	if (json_array_size(mounts) != 1) {
		fail("%s: %zu mounts; ferry mounts one source per ThinRuntime (make one Dataset per "
		     "source)",
			path, json_array_size(mounts));
		goto out;
	}
	mnt = json_array_get(mounts, 0);
	if (!json_is_object(mnt)) {
		fail("%s: mounts[0]: expected an object", path);
		goto out;
	}
	v = json_object_get(mnt, "mountPoint");
	if (!json_is_string(v) || !json_string_length(v)) {
		fail("%s: mounts[0] has no \"mountPoint\" (the Dataset's source)", path);
		goto out;
	}
	json_object_foreach(mnt, key, v)
	{
		if (strcmp(key, "mountPoint") && strcmp(key, "options") && strcmp(key, "name") &&
			strcmp(key, "path") && strcmp(key, "readOnly") && strcmp(key, "shared") &&
			strcmp(key, "encryptOptions"))
			warn("unknown field '%s' in mounts[0], ignored", key);
	}
	/* the ThinRuntime's fuse options win over the Dataset's, as Fluid's runtime options
	 * win over its profile's */
	if (take_options(m, json_object_get(mnt, "options"), "mounts[0].options") ||
		take_options(m, json_object_get(root, "runtimeOptions"), "runtimeOptions"))
		goto out;
	v = json_object_get(root, "targetPath");
	if (!json_is_string(v) || json_string_value(v)[0] != '/') {
		fail("%s: no absolute \"targetPath\" (where Fluid expects the mount)", path);
		goto out;
	}
	m->target = strdup(json_string_value(v));
	if (!m->target) {
		fail("out of memory");
		goto out;
	}
	v = json_object_get(root, "accessModes");
	if (v && !json_is_array(v)) {
		fail("%s: \"accessModes\": expected an array", path);
		goto out;
	}
	for (size_t i = 0; v && i < json_array_size(v); i++) {
		const char *mode = json_string_value(json_array_get(v, i));

		if (mode && strncmp(mode, "ReadOnly", 8))
			warn("accessModes %s: a ferry mount is read-only", mode);
	}
	if (has_control(m->target) ||
		has_control(json_string_value(json_object_get(mnt, "mountPoint")))) {
		fail("%s: a control character in the mountPoint or targetPath", path);
		goto out;
	}
	ret = default_cache_dir(m) ||
	      map_source(m, json_string_value(json_object_get(mnt, "mountPoint")));
out:
	/* secret[] points into root: the secrets' paths, shown by --dry-run */
	if (ret)
		json_decref(root);
	else
		m->json = root;
	return ret;
}

static void fluid_mount_done(struct fluid_mount *m)
{
	for (size_t i = 0; i < NR_FLUID_OPTS; i++)
		free(m->val[i]);
	free(m->source);
	free(m->target);
	json_decref(m->json);
}

#define MAX_ARGS (2 * NR_FLUID_OPTS + 8)

/* ferry mount's argv for m (borrowing m's strings), and the AWS_* variables to set. */
static int build_args(const struct fluid_mount *m, const char **args, int *nr_args)
{
	const char *addressing = opt_val(m, "addressing");
	int n = 0;

	args[n++] = "mount";
	args[n++] = "-f"; /* the container lives as long as the mount */
	/* the application pods read the mount through Fluid's bind mounts as their own users */
	args[n++] = "-o";
	args[n++] = "allow_other";
	for (size_t i = 0; i < NR_FLUID_OPTS; i++) {
		const struct fluid_opt *o = &fluid_opts[i];

		if (!m->val[i])
			continue;
		if (o->kind == K_ARG) {
			args[n++] = o->to;
			args[n++] = m->val[i];
		} else if (o->kind == K_BOOL && strcmp(m->val[i], "false")) {
			args[n++] = o->to;
		} else if (o->kind == K_MINIO && !opt_val(m, "endpoint")) {
			args[n++] = o->to;
			args[n++] = m->val[i];
		}
	}
	/* MinIO serves buckets by path, not as DNS names */
	if (opt_val(m, "minio_url") && !addressing) {
		args[n++] = "--addressing";
		args[n++] = "path";
	}
	args[n++] = m->source;
	args[n++] = m->target;
	args[n] = NULL;
	*nr_args = n;
	return 0;
}

static void print_word(const char *w)
{
	if (w[0] && !w[strcspn(w, " \t\n'\"\\$`;&|<>()*?[]{}~#!")]) {
		fputs(w, stdout);
		return;
	}
	putchar('\'');
	for (; *w; w++)
		if (*w == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*w);
	putchar('\'');
}

/* The command, as a shell would take it: credentials shown as <secret> (with the file they
 * came from), a URL's query as REDACTED. */
static int print_command(const struct fluid_mount *m, const char **args, int n)
{
	for (size_t i = 0; i < NR_FLUID_OPTS; i++) {
		if (fluid_opts[i].kind != K_ENV || !m->val[i])
			continue;
		printf("%s=<secret", fluid_opts[i].to);
		if (m->secret[i])
			printf(" from %s", m->secret[i]);
		printf("> ");
	}
	fputs("ferry", stdout);
	for (int i = 0; i < n; i++) {
		char *shown = url_redact(args[i]);

		if (!shown)
			return fail("out of memory");
		putchar(' ');
		print_word(shown);
		free(shown);
	}
	putchar('\n');
	return fflush(stdout) ? fail("stdout: %s", strerror(errno)) : 0;
}

/* targetPath: made when missing; a ferry mount left there by an earlier container whose
 * daemon died (a crash, SIGKILL: the kubelet restarts the container on the same path) is
 * detached first. Such a mount is found by mountinfo and a statfs, which always reaches the
 * daemon: a stat of the root can still be answered from the kernel's cached attributes. */
static int prepare_target(const char *target)
{
	char *umount_args[] = { "umount", (char *)target, NULL };
	char path[PATH_MAX], fstype[64];
	struct statfs sfs;

	/* by its text: realpath would stat the dead mount */
	if (!cli_lexical_abspath("/", target, path, sizeof(path)) &&
		cli_is_mount_point(path, fstype, sizeof(fstype)) && !strcmp(fstype, "fuse.ferry") &&
		statfs(path, &sfs) && (errno == ENOTCONN || errno == ECONNABORTED)) {
		if (umount_main(2, umount_args))
			return fail("targetPath %s: a dead ferry mount is in the way", target);
	}
	if (snprintf(path, sizeof(path), "%s", target) >= (int)sizeof(path))
		return fail("targetPath %s: path too long", target);
	for (char *p = path + 1;; p++) {
		if (*p && *p != '/')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(path, 0755) && errno != EEXIST)
			return fail("targetPath %s: cannot create %s: %s", target, path,
				strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	return 0;
}

int fluid_mount_main(int argc, char **argv)
{
	struct fluid_mount m = { .secrets_dir = FLUID_SECRETS };
	const char *config = NULL, *args[MAX_ARGS];
	bool dry_run = false;
	int n, ret = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--dry-run") || !strcmp(argv[i], "-n")) {
			dry_run = true;
		} else if (!strcmp(argv[i], "--secrets-dir")) {
			if (++i >= argc)
				return fail("--secrets-dir needs a directory");
			m.secrets_dir = argv[i];
		} else if (!strcmp(argv[i], "--local-root")) {
			if (++i >= argc)
				return fail("--local-root needs a directory");
			m.local_root = argv[i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return fail("unknown option '%s' (try 'ferry fluid-mount --help')",
				argv[i]);
		} else if (!config) {
			config = argv[i];
		} else {
			return fail("unexpected argument '%s' (try 'ferry fluid-mount --help')",
				argv[i]);
		}
	}
	if (!config)
		config = access(FLUID_CONFIG, F_OK) && !access(FLUID_CONFIG_OLD, F_OK)
				 ? FLUID_CONFIG_OLD
				 : FLUID_CONFIG;
	if (parse_config(&m, config) || build_args(&m, args, &n))
		goto out;
	if (dry_run) {
		ret = print_command(&m, args, n);
		goto out;
	}
	/* after prepare_target: the fusermount3 it may run must not inherit the credentials */
	if (prepare_target(m.target))
		goto out;
	for (size_t i = 0; i < NR_FLUID_OPTS; i++) {
		if (fluid_opts[i].kind == K_ENV && m.val[i] &&
			setenv(fluid_opts[i].to, m.val[i], 1)) {
			fail("setenv %s: %s", fluid_opts[i].to, strerror(errno));
			goto out;
		}
	}
	/* mount_main's getopt permutes its argv: a copy of the pointers, m owns the strings */
	ret = mount_main(n, (char **)args);
out:
	fluid_mount_done(&m);
	return ret;
}
