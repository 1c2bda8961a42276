#!/usr/bin/env bash
# ferry over a big manifest (issue 10's scale goals): a generated .ferry-manifest of
# SCALE_DIRS directories of SCALE_FILES files each, plus one directory "wide" of SCALE_WIDE
# files, served by nginx on loopback and mounted. Printed beside each goal, as a markdown table:
#   mount time (`ferry mount` until it returns and the root lists)
#   daemon RSS after the mount (VmRSS)
#   `find` over every entry: its time, its own CPU time (the system part is mostly the kernel
#   making an inode and a dentry for each entry of a READDIRPLUS reply, in find's context), the
#   daemon's CPU time during it, and the daemon's VmRSS and VmHWM after it
#   `ls -f` of the wide directory once it is warm (listed once before)
# The goals are those of 10,000,000 files (the default: 1,000 x 10,000); SCALE_DIRS=90 is
# the 1,000,000-file run (900,000 + 100,000). The manifest is generated once and kept in
# SCALE_DATA (default /tmp/ferry-scale-data-DIRSxFILES+WIDE); only the manifest exists, no
# file is ever read. SCALE_PERF=FILE keeps a perf profile of the daemon during the find.
. "$(dirname "$0")/../integ/lib.sh"
need_fuse
nr_dirs=${SCALE_DIRS:-1000}
nr_files=${SCALE_FILES:-10000}
nr_wide=${SCALE_WIDE:-100000}
data=${SCALE_DATA:-/tmp/ferry-scale-data-${nr_dirs}x${nr_files}+${nr_wide}}
nr_entries=$((nr_dirs * (nr_files + 1) + nr_wide + 1))

now() { date +%s.%N; }
secs() { "$PY" -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$@"; }
kib_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mib() { echo $(($1 / 1024)); }
cpu_s() { # pid: user + system CPU seconds so far
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

if [ ! -s "$data/.ferry-manifest" ]; then
	log "generating a manifest of $nr_entries entries in $data"
	mkdir -p "$data"
	"$PY" - "$data/.ferry-manifest.tmp" "$nr_dirs" "$nr_files" "$nr_wide" <<'PY'
import sys
out, dirs, files, wide = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(out, "w", buffering=1 << 22) as f:
    f.write("ferry-manifest 1\n")
    for d in range(dirs):
        f.write("d 0 1700000000.000000000 - d%04d\n" % d)
        f.writelines("f %d 1700000000.%09d - d%04d/f%06d\n" % (i % 65536, i, d, i)
                     for i in range(files))
    f.write("d 0 1700000000.000000000 - wide\n")
    f.writelines("f %d 1700000000.000000000 - wide/w%07d\n" % (i, i) for i in range(wide))
PY
	mv "$data/.ferry-manifest.tmp" "$data/.ferry-manifest"
fi
log "manifest: $nr_entries entries, $(($(stat -c %s "$data/.ferry-manifest") >> 20)) MiB"
serve_nginx "$data"

t0=$(now)
mount_ferry "http://127.0.0.1:$PORT/" "$T/mnt"
ls -f "$T/mnt" >/dev/null
t1=$(now)
mount_s=$(secs "$t0" "$t1")
pid=$(ferry_daemon_pid "$T/mnt")
rss_mount=$(kib_of "$pid" VmRSS)

cpu0=$(cpu_s "$pid")
# SCALE_PERF=FILE: the daemon's profile during the find (perf record -g) is kept in FILE.
if [ -n "${SCALE_PERF:-}" ]; then
	perf record -g -o "$SCALE_PERF" -p "$pid" 2>"$T/perf.log" &
	perf_pid=$!
	sleep 1
fi
TIMEFORMAT='%R %U %S'
{ time find "$T/mnt" -mindepth 1 | wc -l >"$T/nr_found"; } 2>"$T/find_time"
if [ -n "${SCALE_PERF:-}" ]; then
	kill -INT "$perf_pid"
	wait "$perf_pid" || true
fi
read -r find_s find_user_s find_sys_s <"$T/find_time"
nr_found=$(cat "$T/nr_found")
find_cpu_s=$(secs "$cpu0" "$(cpu_s "$pid")")
[ "$nr_found" -eq "$nr_entries" ] || fail "find saw $nr_found entries, the manifest has $nr_entries"
rss_find=$(kib_of "$pid" VmRSS)
hwm_find=$(kib_of "$pid" VmHWM)

ls -f "$T/mnt/wide" >/dev/null
t0=$(now)
nr_ls=$(ls -f "$T/mnt/wide" | wc -l)
t1=$(now)
ls_s=$(secs "$t0" "$t1")
[ "$nr_ls" -eq $((nr_wide + 2)) ] || fail "ls -f wide printed $nr_ls names, not $((nr_wide + 2))"
umount_ferry "$T/mnt"

verdict() { # measured limit
	"$PY" -c 'import sys; print("yes" if float(sys.argv[1]) < float(sys.argv[2]) else "**no**")' "$@"
}
row() { echo "| $1 | $2 | $3 | $4 |"; }
rss_find_mib=$(mib "$rss_find")
echo
echo "$nr_entries entries ($nr_dirs x $nr_files + $nr_wide)," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
row case "goal (10M files)" measured within
row --- --- --- ---
row "mount (until the root lists)" "< 10 s" "$mount_s s" "$(verdict "$mount_s" 10)"
row "daemon VmRSS after mount" - "$(mib "$rss_mount") MiB" -
row "find over all entries" "< 60 s" "$find_s s" "$(verdict "$find_s" 60)"
row "find's own CPU, user + system (the kernel's work on each reply)" - \
	"$find_user_s + $find_sys_s s" -
row "daemon CPU during the find" - "$find_cpu_s s" -
row "daemon VmRSS after find" "< 1024 MiB" "$rss_find_mib MiB" "$(verdict "$rss_find_mib" 1024)"
row "daemon VmHWM after find" - "$(mib "$hwm_find") MiB" -
row "ls -f of the warm $nr_wide-entry directory" "< 0.5 s" "$ls_s s" "$(verdict "$ls_s" 0.5)"
pass
