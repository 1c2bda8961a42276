#!/usr/bin/env bash
# A server that faults a fifth of the chunk GETs, each fault one of: 500, 503 with an XML body,
# 429, a body cut short, a reset, 204, 203 with other bytes, 201, 200 with the whole file, 206
# with another range (faultserver --mode mix --rate 0.2; no stalls, which cost a timeout each).
# Sequential reads of some files and random preads from 4 threads over others (cold, so their
# GETs meet the faults too): every read that
# succeeds is the source's bytes, every failure is EIO. Then, the server behaving, everything
# reads right, on the same mount and after a remount on the same cache.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a.bin:3M b.bin:5M c.bin:700K d/e.bin:2M f.bin:64K r/g.bin:6M r/h.bin:3M
seq_names=(a.bin b.bin c.bin d/e.bin f.bin)
random_names=(r/g.bin r/h.bin)
names=("${seq_names[@]}" "${random_names[@]}")
start_faultserver "$T/src" --mode mix --rate 0.2 --seed 7
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 256K --cache-dir "$T/cache"

failed=""
log "sequential reads, 128 KiB at a time"
check_reads "$T/src" "$T/mnt" --seq 128K "${seq_names[@]}" ||
	{ echo "FAILED: sequential reads" >&2; failed="$failed sequential"; }
nr_faults=$(fault_count_faulted)
log "the server faulted $nr_faults of $(fault_count) GETs of the sequential reads"
[ "$nr_faults" -gt 0 ] || fail "no fault was injected in the sequential reads"
log "random preads from 4 threads"
fault_set "mode=mix&rate=0.2&seed=8"
# --seq larger than the files: one read of each whole, then the random ones.
check_reads "$T/src" "$T/mnt" --seq 16M --random 300 --seed 8 --threads 4 "${random_names[@]}" ||
	{ echo "FAILED: random reads" >&2; failed="$failed random"; }
nr_faults=$(fault_count_faulted)
log "the server faulted $nr_faults of $(fault_count) GETs of the random reads"
[ "$nr_faults" -gt 0 ] || fail "no fault was injected in the random reads"

log "the server behaving: everything reads right"
fault_set "mode=ok"
check_reads "$T/src" "$T/mnt" --all-ok --seq 1M --random 50 --seed 9 "${names[@]}" ||
	{ echo "FAILED: reads once the server behaves" >&2; failed="$failed after"; }
umount_ferry "$T/mnt"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 256K --cache-dir "$T/cache"
check_reads "$T/src" "$T/mnt" --all-ok "${names[@]}" ||
	{ echo "FAILED: reads after a remount" >&2; failed="$failed remount"; }
umount_ferry "$T/mnt"
[ -z "$failed" ] || fail "failed:$failed (see above)"
pass
