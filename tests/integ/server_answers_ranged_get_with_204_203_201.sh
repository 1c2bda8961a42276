#!/usr/bin/env bash
# A server that answers ranged GETs with 204, 203 (other bytes, the asked Content-Range) or 201
# after another file was read: none of these is data. Every read of a 1 MiB-chunked file is EIO
# or the source's bytes, never the bytes of a pooled buffer or of the 203 body; and nothing
# wrong was cached: remounted on the same cache dir with the server behaving, every file reads
# as the source.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" first.bin:3M r204.bin:2M r203.bin:2M r201.bin:2M
start_faultserver "$T/src"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache"

log "another file first, so that buffers hold its bytes"
check_reads "$T/src" "$T/mnt" --all-ok first.bin || fail "first.bin: see above"

# Each answer is tried (and its failure told) before the test fails, so one run says which.
failed=""
for code in 204 203 201; do
	log "every ranged GET answered $code"
	fault_set "mode=$code&every=1"
	# A fetch engine may retry these with backoff before it says EIO (seconds a read, and the
	# kernel reads a failed page twice): few reads, and room for that.
	CHECK_TIMEOUT=120 check_reads "$T/src" "$T/mnt" --seq 1M --random 1 --seed "$code" \
		"r$code.bin" || { echo "FAILED: answers $code" >&2; failed="$failed $code"; }
	[ "$(fault_count)" -gt 0 ] || fail "answers $code: no GET reached the server"
done
umount_ferry "$T/mnt"

log "remounted on the same cache, the server behaving: nothing wrong was kept"
fault_set "mode=ok"
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache"
check_reads "$T/src" "$T/mnt" --all-ok first.bin r204.bin r203.bin r201.bin ||
	failed="$failed cached-after-remount"
umount_ferry "$T/mnt"
[ -z "$failed" ] || fail "wrong bytes or errors for:$failed (see above)"
pass
