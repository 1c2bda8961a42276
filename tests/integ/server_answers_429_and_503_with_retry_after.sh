#!/usr/bin/env bash
# A server that sheds load: every second chunk GET answered 429 Too Many Requests, or 503 with
# an S3-style XML error body (SlowDown), both with Retry-After: 1. Those are retried: every read
# succeeds with the source's bytes, `ferry stat` counts the retries, and the retry waits for the
# second the server asked for (a chunk whose first GET was refused takes at least that long).
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" a429.bin:3M b429.bin:2M one429.bin:500K a503.bin:3M b503.bin:2M one503.bin:500K
start_faultserver "$T/src"
# No directory readahead: the GETs the server counts are the reads' own.
mount_ferry "$FAULT_URL/" "$T/mnt" --chunk-size 1M --cache-dir "$T/cache" --dir-readahead 0

failed=""
for code in 429 503xml; do
	f=${code%xml}
	log "every second chunk GET answered $code with Retry-After: 1"
	fault_set "mode=$code&every=2"
	check_reads "$T/src" "$T/mnt" --all-ok --seq 256K --random 10 --seed "$f" \
		"a$f.bin" "b$f.bin" || { echo "FAILED: $code" >&2; failed="$failed $code"; }
	[ "$(fault_count_faulted)" -gt 0 ] || fail "$code: the server refused no GET"

	log "$code: a chunk whose first GET is refused is read after Retry-After"
	# The next file GET is the second since this reset: the server refuses it, the retry is
	# served. Read one fresh chunk and time it.
	fault_set "mode=$code&every=2"
	curl -sf -o /dev/null -r 0-0 "$FAULT_URL/a$f.bin" || fail "the warm-up GET failed"
	t0=$(date +%s.%N)
	check_reads "$T/src" "$T/mnt" --all-ok --seq 1M "one$f.bin" ||
		{ echo "FAILED: $code one chunk" >&2; failed="$failed $code-one-chunk"; }
	t1=$(date +%s.%N)
	[ "$(fault_count_faulted)" -ge 1 ] || fail "$code: the server refused no GET of that chunk"
	elapsed=$("$PY" -c "print(round($t1 - $t0, 2))")
	log "$code: the refused chunk read in $elapsed s"
	"$PY" -c "import sys; sys.exit($elapsed < 0.9)" ||
		{ echo "FAILED: $code retried after $elapsed s, before the Retry-After of 1 s" >&2
		  failed="$failed $code-retry-after"; }
done
retries=$(stat_json "$T/mnt" retries)
log "ferry stat: $retries retries"
[ "$retries" -gt 0 ] || failed="$failed no-retries-counted"
umount_ferry "$T/mnt"
[ -z "$failed" ] || fail "failed:$failed (see above)"
pass
