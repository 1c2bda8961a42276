#!/usr/bin/env bash
# An object replaced on the S3 server after its first chunk was read through the mount: every
# later read of the open file gives ESTALE/EIO or the old bytes, never new bytes and never a mix, for
# a replacement of the same size and of another size; each chunk is checked against both the
# old and the new source. After the metadata TTL a fresh open sees one version whole.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3
chunk=$((256 << 10))
make_tree "$T/old" same.bin:2M grows.bin:2M
make_tree "$T/new" v2/same.bin:2M v2/grows.bin:3M # another spec: other bytes
mv "$T/new/v2/same.bin" "$T/new/v2/grows.bin" "$T/new/"
cmp -s "$T/old/same.bin" "$T/new/same.bin" && fail "old and new sources are equal"
s3_put_tree "$T/old" ds/ >/dev/null
M=$T/mnt
mount_ferry "s3://$S3_BUCKET/ds/" "$M" --endpoint "$S3_ENDPOINT" --addressing path \
	--chunk-size 256K --metadata-ttl 3s

# check.py MODE FILE OLD NEW: MODE open: open FILE, read its first chunk, print "ready", wait
# for a line on stdin (the replacement), then read every chunk (and reads across chunk
# boundaries); each read must be EIO, or exactly the old bytes. MODE fresh: read the whole
# file once; it must equal OLD or NEW whole.
cat >"$T/check.py" <<'PY'
import errno, os, sys
mode, path, old_p, new_p, chunk = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
old, new = open(old_p, "rb").read(), open(new_p, "rb").read()
if mode == "fresh":
    got = open(path, "rb").read()
    if got == new:
        print("fresh open: the new version, whole")
    elif got == old:
        print("fresh open: the old version, whole")
    else:
        sys.exit("fresh open: %d bytes that are neither version" % len(got))
    sys.exit(0)
# No readahead of ours may fetch more than the first chunk before the replacement.
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
first = os.pread(fd, 4096, 0)
assert first == old[:4096], "first read is not the old bytes"
print("ready", flush=True)
sys.stdin.readline()
n_old = n_eio = 0
bad = []
cases = [(i * chunk, chunk) for i in range(len(old) // chunk)]
cases += [(i * chunk - 100, 200) for i in range(1, len(old) // chunk)]
cases += [(0, len(old)), (0, 4096)]
# A read is what a careful program does: pread until n bytes or an error. The kernel may
# answer part of it from pages it already holds (a short count), then EIO for the rest:
# every piece must be the old bytes, and the whole must end complete or in EIO.
for off, n in cases:
    got, err = b"", None
    while len(got) < n:
        try:
            piece = os.pread(fd, n - len(got), off + len(got))
        except OSError as e:
            err = e
            break
        if not piece:
            break
        got += piece
    if got and got != old[off:off + len(got)]:
        if got == new[off:off + len(got)]:
            bad.append("%d+%d: the NEW bytes" % (off, n))
        else:
            bad.append("%d+%d: %d bytes that are neither version (a mix)" % (off, n, len(got)))
    elif err is not None:
        # docs/ferry.md: a changed object is ESTALE (EIO where the kernel says so).
        if err.errno not in (errno.ESTALE, errno.EIO):
            bad.append("%d+%d: %s" % (off, n, err))
        n_eio += 1
    elif len(got) == n:
        n_old += 1
    else:
        bad.append("%d+%d: end of file after %d bytes" % (off, n, len(got)))
os.close(fd)
for b in bad:
    print("BAD", b, file=sys.stderr)
print("%d reads: %d old bytes, %d EIO" % (len(cases), n_old, n_eio))
sys.exit(1 if bad else 0)
PY

for f in same.bin grows.bin; do
	log "$f: replaced after its first chunk was read"
	coproc CHECK { "$PY" "$T/check.py" open "$M/$f" "$T/old/$f" "$T/new/$f" "$chunk" 2>&1; }
	read -r line <&"${CHECK[0]}" || fail "$f: the reader did not start"
	[ "$line" = ready ] || fail "$f: reader: $line"
	s3_put_file "$T/new/$f" "ds/$f"
	echo go >&"${CHECK[1]}"
	out=$(cat <&"${CHECK[0]}") || true
	wait "$CHECK_PID" || { echo "$out" >&2; fail "$f: a read gave new or mixed bytes"; }
	echo "$out"
done
[ "$(stat_json "$M" bytes_fetched)" -lt $((8 << 20)) ] || fail "fetched more than both objects"

log "after the metadata TTL, a fresh open sees one version whole"
sleep 3.5
for f in same.bin grows.bin; do
	"$PY" "$T/check.py" fresh "$M/$f" "$T/old/$f" "$T/new/$f" "$chunk" ||
		fail "$f: a fresh open mixed versions"
done
umount_ferry "$M"
pass
