/* Unit tests of mount/cli.c: size and duration parsing, fstab option translation for
 * mount.ferry, mountinfo escapes. Expected values are written out by hand. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mount/cli.h"

static uint64_t size_of(const char *s)
{
	uint64_t v = 12345;

	cr_assert_eq(cli_parse_size(s, &v), 0, "'%s' should parse", s);
	return v;
}

Test(cli, parses_sizes_with_binary_suffixes)
{
	cr_assert_eq(size_of("4096"), 4096);
	cr_assert_eq(size_of("64K"), 65536);
	cr_assert_eq(size_of("64k"), 65536);
	cr_assert_eq(size_of("8M"), 8388608);
	cr_assert_eq(size_of("8MiB"), 8388608);
	cr_assert_eq(size_of("8MB"), 8388608);
	cr_assert_eq(size_of("50G"), 53687091200ull);
	cr_assert_eq(size_of("2T"), 2199023255552ull);
	cr_assert_eq(size_of("1.5G"), 1610612736ull);
	cr_assert_eq(size_of("0"), 0);
}

Test(cli, rejects_nonsense_sizes)
{
	static const char *const bad[] = { "", "G", "-5", "12Q", "8 M", "1.5", "8MiBs", "0x10",
		" 8M", "8M ", "1..5G", NULL };
	uint64_t v;

	for (int i = 0; bad[i]; i++)
		cr_expect_neq(cli_parse_size(bad[i], &v), 0, "'%s' should be refused", bad[i]);
	cr_expect_eq(cli_parse_size("99999999999999999999", &v), -ERANGE);
	cr_expect_eq(cli_parse_size("16777216T", &v), -ERANGE);
}

Test(cli, parses_durations_and_never)
{
	double d;

	cr_assert_eq(cli_parse_duration("3600", &d), 0);
	cr_expect_float_eq(d, 3600, 1e-9);
	cr_assert_eq(cli_parse_duration("90s", &d), 0);
	cr_expect_float_eq(d, 90, 1e-9);
	cr_assert_eq(cli_parse_duration("30m", &d), 0);
	cr_expect_float_eq(d, 1800, 1e-9);
	cr_assert_eq(cli_parse_duration("2h", &d), 0);
	cr_expect_float_eq(d, 7200, 1e-9);
	cr_assert_eq(cli_parse_duration("0.5", &d), 0);
	cr_expect_float_eq(d, 0.5, 1e-9);
	cr_assert_eq(cli_parse_duration("never", &d), 0);
	cr_expect_float_eq(d, -1, 1e-9);
	cr_expect_neq(cli_parse_duration("abc", &d), 0);
	cr_expect_neq(cli_parse_duration("5x", &d), 0);
	cr_expect_neq(cli_parse_duration("-3", &d), 0);
	cr_expect_neq(cli_parse_duration("", &d), 0);
}

static void free_args(char **argv, int argc)
{
	for (int i = 0; i < argc; i++)
		free(argv[i]);
}

Test(cli, translates_fstab_options_and_drops_standard_ones)
{
	char *argv[32], err[128] = "";
	int argc = 0;
	static const char *const want[] = { "--cache-dir", "/var/cache/ferry", "--cache-size",
		"20G", "--no-sign-request", "-o", "allow_other,max_threads=4" };

	cr_assert_eq(
		cli_fstab_to_args("ro,nodev,nosuid,_netdev,noauto,user,cache_dir=/var/cache/ferry,"
				  "cache_size=20G,x-systemd.automount,no_sign_request,allow_other,"
				  "defaults,max_threads=4",
			argv, &argc, 32, err, sizeof(err)),
		0, "%s", err);
	cr_assert_eq(argc, 7);
	for (int i = 0; i < argc; i++)
		cr_expect_str_eq(argv[i], want[i]);
	free_args(argv, argc);
}

Test(cli, refuses_fstab_option_missing_its_value)
{
	char *argv[8], err[128] = "";
	int argc = 0;

	cr_expect_eq(cli_fstab_to_args("ro,cache_dir", argv, &argc, 8, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "cache_dir") != NULL, "error names the option: %s", err);
	free_args(argv, argc);
	argc = 0;
	err[0] = '\0';
	cr_expect_eq(cli_fstab_to_args("no_sign_request=1", argv, &argc, 8, err, sizeof(err)),
		-EINVAL);
	free_args(argv, argc);
}

Test(cli, translates_nothing_from_only_standard_options)
{
	char *argv[8], err[128] = "";
	int argc = 0;

	cr_assert_eq(cli_fstab_to_args("ro,noauto,user", argv, &argc, 8, err, sizeof(err)), 0);
	cr_expect_eq(argc, 0);
}

Test(cli, decodes_mountinfo_octal_escapes)
{
	char s[] = "/mnt/with\\040space\\011tab\\134back";

	cli_mountinfo_unescape(s);
	cr_expect_str_eq(s, "/mnt/with space\ttab\\back");
}

Test(cli, finds_the_root_mount_point_and_its_type)
{
	char type[64] = "";

	cr_expect(cli_is_mount_point("/", type, sizeof(type)));
	cr_expect(type[0] != '\0');
	cr_expect(!cli_is_mount_point("/surely/not/a/mount/point", NULL, 0));
}

Test(cli, formats_bytes_in_binary_units)
{
	char b[32];

	cli_format_bytes(512, b, sizeof(b));
	cr_expect_str_eq(b, "512 B");
	cli_format_bytes(1536, b, sizeof(b));
	cr_expect_str_eq(b, "1.5 KiB");
	cli_format_bytes(20ull << 30, b, sizeof(b));
	cr_expect_str_eq(b, "20.0 GiB");
}

Test(cli, translates_the_fstab_option_that_allows_outside_symlinks)
{
	char *argv[8], err[128] = "";
	int argc = 0;

	cr_assert_eq(cli_fstab_to_args("ro,allow_outside_symlinks", argv, &argc, 8, err,
			     sizeof(err)),
		0, "%s", err);
	cr_assert_eq(argc, 1);
	cr_expect_str_eq(argv[0], "--allow-outside-symlinks");
	free_args(argv, argc);
}

/* What cli_print_stats writes for json, in a new string. */
static char *stats_text(const char *json)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert(f);
	cli_print_stats(f, json, "http://h/d/");
	fclose(f);
	return text;
}

Test(cli, prints_a_degraded_cache_and_its_disk_errors)
{
	char *t = stats_text("{\"hits\":3,\"misses\":1,\"degraded\":true,\"disk_errors\":17}");

	cr_expect(strstr(t, "cache state      degraded: the cache volume kept failing, reads "
			    "bypass the cache\n"),
		"%s", t);
	cr_expect(strstr(t, "disk errors      17\n"), "%s", t);
	cr_expect(strstr(t, "hit rate         75.0%\n"), "%s", t);
	free(t);
}

Test(cli, prints_a_healthy_cache_with_no_disk_errors)
{
	char *t = stats_text("{\"hits\":0,\"degraded\":false,\"disk_errors\":0}");

	cr_expect(strstr(t, "cache state      ok\n"), "%s", t);
	cr_expect(strstr(t, "disk errors      0\n"), "%s", t);
	free(t);
}

Test(cli, leaves_out_the_fields_an_older_daemon_does_not_send)
{
	char *t = stats_text("{\"hits\":1,\"misses\":1}");

	cr_expect_null(strstr(t, "cache state"), "%s", t);
	cr_expect_null(strstr(t, "disk errors"), "%s", t);
	cr_expect(strstr(t, "source           http://h/d/\n"), "%s", t);
	free(t);
}

/* A mount table as /proc/self/mountinfo writes it: an ext4 root, a ferry mount with a space
 * in its name, a bind mount of a subdirectory of it listed after it, a plain directory
 * mounted over a directory inside it, and a second ferry mount stacked on /data. */
static const char mountinfo[] =
	"22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
	"40 22 0:51 / /mnt/my\\040data rw,nosuid,nodev shared:20 - fuse.ferry ferry rw\n"
	"41 22 0:51 /sub /srv/sub rw,nosuid,nodev shared:20 - fuse.ferry ferry rw\n"
	"42 40 0:52 / /mnt/my\\040data/over rw - tmpfs tmpfs rw\n"
	"50 22 0:60 / /data rw - fuse.ferry ferry rw\n"
	"51 22 0:61 / /data rw - fuse.ferry ferry rw\n"
	"not a mountinfo line\n";

static FILE *mountinfo_file(void)
{
	FILE *f = fmemopen((void *)mountinfo, sizeof(mountinfo) - 1, "r");

	cr_assert(f);
	return f;
}

static struct cli_mount *mount_containing(const char *path)
{
	static struct cli_mount m;
	FILE *f = mountinfo_file();
	bool found = cli_mount_containing(f, path, &m);

	fclose(f);
	return found ? &m : NULL;
}

Test(cli, finds_the_mount_holding_a_path_by_its_name)
{
	cr_expect_str_eq(mount_containing("/mnt/my data")->mount_point, "/mnt/my data");
	cr_expect_str_eq(mount_containing("/mnt/my data/a/b.bin")->fstype, "fuse.ferry");
	cr_expect_str_eq(mount_containing("/mnt/my data/over/x")->fstype, "tmpfs");
	/* A name that only begins like a mount point is not under it. */
	cr_expect_str_eq(mount_containing("/mnt/my database")->mount_point, "/");
	cr_expect_str_eq(mount_containing("/etc/passwd")->fstype, "ext4");
	/* Of two mounts stacked on one point, the top one: listed last. */
	cr_expect_eq(mount_containing("/data/x")->minor, 61);
}

Test(cli, finds_the_mount_of_a_device_preferring_its_root)
{
	struct cli_mount m;
	FILE *f = mountinfo_file();

	cr_assert(cli_mount_of_dev(f, 0, 51, &m));
	cr_expect_str_eq(m.mount_point, "/mnt/my data", "not the bind mount of /sub");
	cr_expect_str_eq(m.root, "/");
	rewind(f);
	cr_expect(!cli_mount_of_dev(f, 0, 99, &m));
	rewind(f);
	cr_assert(cli_mount_of_dev(f, 253, 0, &m));
	cr_expect_str_eq(m.fstype, "ext4");
	fclose(f);
}

static const char *abspath(const char *cwd, const char *path)
{
	static char out[64];

	cr_assert_eq(cli_lexical_abspath(cwd, path, out, sizeof(out)), 0, "%s + %s", cwd, path);
	return out;
}

Test(cli, makes_a_path_absolute_and_clean_by_its_text)
{
	cr_expect_str_eq(abspath("/home/u", "mnt/"), "/home/u/mnt");
	cr_expect_str_eq(abspath("/home/u", "./mnt//a/../b/."), "/home/u/mnt/b");
	cr_expect_str_eq(abspath("/home/u", "../../../x"), "/x");
	cr_expect_str_eq(abspath("/home/u", "/abs/./p/"), "/abs/p");
	cr_expect_str_eq(abspath("/home/u", ".."), "/home");
	cr_expect_str_eq(abspath("/", "."), "/");
	cr_expect_str_eq(abspath("/home/u", "/"), "/");
}

Test(cli, refuses_a_path_longer_than_its_buffer)
{
	char out[8];

	cr_expect_eq(cli_lexical_abspath("/", "/a/long/path", out, sizeof(out)), -ENAMETOOLONG);
}

Test(cli, quotes_a_path_for_the_shell_only_when_it_must)
{
	char q[64];

	cli_shell_quote("/mnt/data-1.2", q, sizeof(q));
	cr_expect_str_eq(q, "/mnt/data-1.2");
	cli_shell_quote("/mnt/my data", q, sizeof(q));
	cr_expect_str_eq(q, "'/mnt/my data'");
	cli_shell_quote("/mnt/it's", q, sizeof(q));
	cr_expect_str_eq(q, "'/mnt/it'\\''s'");
	cli_shell_quote("/mnt/$HOME", q, sizeof(q));
	cr_expect_str_eq(q, "'/mnt/$HOME'");
}

Test(cli, draws_the_progress_of_a_warm)
{
	char line[128];

	cli_format_progress(line, sizeof(line), 1ull << 30, 4ull << 30, 2.0, false);
	cr_expect_str_eq(line,
		"[=======                       ]  25%  1.0 GiB / 4.0 GiB  512.0 MiB/s");
	/* While the walk still finds files, the total is a lower bound. */
	cli_format_progress(line, sizeof(line), 0, 3ull << 20, 0, true);
	cr_expect_str_eq(line, "[                              ]   0%  0 B / 3.0 MiB+  0 B/s");
	/* Nothing to warm is all warmed, and never more than all. */
	cli_format_progress(line, sizeof(line), 0, 0, 1.0, false);
	cr_expect(strstr(line, "100%"), "%s", line);
	cli_format_progress(line, sizeof(line), 5, 4, 1.0, false);
	cr_expect(strstr(line, "[==============================] 100%"), "%s", line);
}
