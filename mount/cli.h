/* mount/'s parsing helpers, kept apart from the commands so they are unit-tested: sizes with
 * K/M/G/T suffixes, durations, fstab option translation for mount.ferry, /proc/self/mountinfo. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* "8M", "50G", "1T", "4096", "1.5G", "64KiB", "8MB": binary multiples (K = 1024). Nothing
 * else, no negatives, no overflow: -EINVAL / -ERANGE. */
int cli_parse_size(const char *s, uint64_t *out);
/* "3600", "90s", "30m", "1h", "2d", "0.5"; "never" or "-1" gives -1: -EINVAL otherwise. */
int cli_parse_duration(const char *s, double *out);
/* The number under "key" in the daemon's flat stats JSON; 0 when absent. */
double cli_json_num(const char *json, const char *key);
/* Bytes as "1.5 GiB". */
void cli_format_bytes(uint64_t bytes, char *buf, size_t len);
/* The progress line of `ferry warm`: "[=======       ]  25%  1.0 GiB / 4.0 GiB  100.0 MiB/s",
 * with "+" after the total while the walk is still finding files (the total then grows). */
void cli_format_progress(char *buf, size_t len, uint64_t done_bytes, uint64_t total_bytes,
	double elapsed_s, bool counting);

/* Translates an fstab option string ("ro,cache_dir=/c,cache_size=20G,allow_other") into
 * `ferry mount` arguments appended to argv (which has room for max entries; the strings
 * are newly allocated). Standard options (ro, nodev, nosuid, noexec, _netdev, noauto, auto,
 * user, users, nouser, defaults, nofail, x-*, comment=*) are dropped; ferry's own become
 * --options; the rest are passed to FUSE with -o. -EINVAL with the reason in err. */
int cli_fstab_to_args(const char *opts, char **argv, int *argc, int max, char *err, size_t errlen);

/* The human form of `ferry stat`: one "name  value" line per counter of the daemon's stats
 * JSON (a flat object, docs/ferry.md), source being the mount's user.ferry.source. Fields an
 * older daemon does not send (degraded, disk_errors) are left out, not shown as 0. */
void cli_print_stats(FILE *out, const char *json, const char *source);

/* Whether path (canonical) is the mount point of some mount, from /proc/self/mountinfo;
 * fstype (when not NULL, size len) receives that mount's type ("fuse.ferry"). */
bool cli_is_mount_point(const char *path, char *fstype, size_t len);
/* Decodes mountinfo's octal escapes (\040 for a space) in place. */
void cli_mountinfo_unescape(char *s);

/* One line of /proc/self/mountinfo, the fields ferry's commands look at. */
struct cli_mount {
	unsigned int major, minor; /* the device, as stat's st_dev names it */
	char root[4096];           /* the directory of the file system mounted there */
	char mount_point[4096];
	char fstype[64]; /* "fuse.ferry" for ferry's mounts */
};

/* The mount whose device is major:minor, from mountinfo text: one whose root is the file
 * system's own when there is such (a bind mount of a subdirectory is not where the daemon's
 * stats are), the last listed among equals (the top of a stack). false when none. */
bool cli_mount_of_dev(FILE *mountinfo, unsigned int major, unsigned int minor, struct cli_mount *m);
/* The mount holding abspath (absolute and clean, see cli_lexical_abspath) by its name alone:
 * the longest mount point that is abspath or a directory above it, the last listed among
 * equals. For paths that cannot be stat'ed, as on a mount whose daemon died. */
bool cli_mount_containing(FILE *mountinfo, const char *abspath, struct cli_mount *m);
/* path made absolute against cwd, with "", "." and ".." components resolved by the text
 * alone (symlinks are not followed: on a mount whose daemon died the file system cannot be
 * asked). -ENAMETOOLONG when out (size len) is too small. */
int cli_lexical_abspath(const char *cwd, const char *path, char *out, size_t len);
/* s as one shell word, for a command line shown to the user: as it is when it holds only
 * characters no shell treats specially, else in single quotes. */
void cli_shell_quote(const char *s, char *out, size_t len);

#endif
