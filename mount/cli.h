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
/* Bytes as "1.5 GiB". */
void cli_format_bytes(uint64_t bytes, char *buf, size_t len);

/* Translates an fstab option string ("ro,cache_dir=/c,cache_size=20G,allow_other") into
 * `ferry mount` arguments appended to argv (which has room for max entries; the strings
 * are newly allocated). Standard options (ro, nodev, nosuid, noexec, _netdev, noauto, auto,
 * user, users, nouser, defaults, nofail, x-*, comment=*) are dropped; ferry's own become
 * --options; the rest are passed to FUSE with -o. -EINVAL with the reason in err. */
int cli_fstab_to_args(const char *opts, char **argv, int *argc, int max, char *err,
	size_t errlen);

/* The human form of `ferry stat`: one "name  value" line per counter of the daemon's stats
 * JSON (a flat object, docs/ferry.md), source being the mount's user.ferry.source. Fields an
 * older daemon does not send (degraded, disk_errors) are left out, not shown as 0. */
void cli_print_stats(FILE *out, const char *json, const char *source);

/* Whether path (canonical) is the mount point of some mount, from /proc/self/mountinfo;
 * fstype (when not NULL, size len) receives that mount's type ("fuse.ferry"). */
bool cli_is_mount_point(const char *path, char *fstype, size_t len);
/* Decodes mountinfo's octal escapes (\040 for a space) in place. */
void cli_mountinfo_unescape(char *s);

#endif
