#!/usr/bin/env bash
# --dir-readahead: opening the files of a directory in listing order fetches the next ones
# before they are opened, with the source's bytes; opens in another order, a walk over cached
# files, and --dir-readahead 0 fetch nothing ahead; files the fetch engine turned away (its
# readahead memory full) are asked for again by the walk's next opens.
. "$(dirname "$0")/lib.sh"
need_fuse
mkdir -p "$T/src/d"
"$PY" - "$T/src/d" <<'PY'
import os, random, sys
random.seed(5)
for i in range(120):
    with open(os.path.join(sys.argv[1], "f%03d.bin" % i), "wb") as f:
        f.write(random.randbytes(random.randint(1, 64 << 10)))
PY
# mixed/: files between subdirectories, as a walk that descends or a glob that skips meets them.
# big/: three tiny files, then files larger than a chunk (8 MiB), sparse on the server's disk.
mkdir -p "$T/src/mixed" "$T/src/big"
for i in $(seq 0 2 40); do
	head -c $((1000 + i)) /dev/urandom >"$T/src/mixed/e$(printf %03d "$i").bin"
	mkdir "$T/src/mixed/e$(printf %03d $((i + 1)))"
done
for i in 0 1 2; do echo "$i" >"$T/src/big/b$(printf %02d "$i")"; done
for i in $(seq 3 14); do truncate -s $(((9 << 20) + i)) "$T/src/big/b$(printf %02d "$i")"; done
serve_nginx "$T/src"
url="http://127.0.0.1:$PORT/"

# open_read MOUNTDIR N...: opens and reads files fNNN.bin, in the order given.
open_read() {
	"$PY" - "$@" <<'PY'
import os, sys
d = sys.argv[1]
for n in sys.argv[2:]:
    with open(os.path.join(d, "f%03d.bin" % int(n)), "rb") as f:
        f.read()
PY
}
cached() { xattr "$1/d/f$(printf %03d "$2").bin" user.ferry.cached; }
size_of() { stat -c %s "$T/src/d/f$(printf %03d "$1").bin"; }
gets_of() { # requests for files of d/ that nginx saw, sorted
	nginx_requests | awk '$1 == "GET" && $2 ~ /^\/d\/f/ { print $2 }' | sort -u
}
# why_not_ahead MOUNTDIR [N...]: what a failure needs to say why: the counters of the fetch
# engine and of the directory readahead, then cached/size of each file fN of d/. Files the
# engine turned away show as 0 among cached neighbours with no fetch error: readahead's
# memory bound was full (the store lagged), not a failed fetch.
why_not_ahead() {
	local mnt=$1 n
	shift
	timeout 30 "$FERRY" stat "$mnt" --json >"$T/.why.json" 2>&1 || echo "(ferry stat failed)"
	"$PY" - "$T/.why.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%s" % (k, d.get(k)) for k in
    ("dir_readahead_files", "fetch_errors", "retries", "requests", "bytes_fetched", "hits",
     "misses", "disk_errors", "degraded")), end="")
PY
	for n in "$@"; do
		printf ' f%03d=%s/%s' "$n" "$(cached "$mnt" "$n" 2>/dev/null || echo "?")" "$(size_of "$n")"
	done
}

log "four files opened in order: the next ones arrive before anyone opens them"
mount_ferry "$url" "$T/mnt"
open_read "$T/mnt/d" 0 1 2 3
ok=0
for _ in $(seq 100); do
	[ "$(cached "$T/mnt" 10)" = "$(size_of 10)" ] && { ok=1; break; }
	sleep 0.1
done
[ "$ok" = 1 ] || fail "f010.bin was not fetched ahead: cached $(cached "$T/mnt" 10) of" \
	"$(size_of 10) after 10 s; $(why_not_ahead "$T/mnt" $(seq 3 12))"
ahead=$(stat_json "$T/mnt" dir_readahead_files)
[ "$ahead" -ge 7 ] || fail "dir_readahead_files is $ahead after an in-order walk of 4 files;" \
	"$(why_not_ahead "$T/mnt" $(seq 3 12))"
[ "$(cached "$T/mnt" 100)" = 0 ] || fail "f100.bin, 96 files past the walk, was fetched"
log "a walk that skips entries (subdirectories between the files) still fetches ahead"
"$PY" -c 'import sys
for n in (0, 2, 4, 6):
    open("%s/e%03d.bin" % (sys.argv[1], n), "rb").read()' "$T/mnt/mixed"
ok=0
for _ in $(seq 100); do
	[ "$(xattr "$T/mnt/mixed/e012.bin" user.ferry.cached)" = "$(stat -c %s "$T/src/mixed/e012.bin")" ] &&
		{ ok=1; break; }
	sleep 0.1
done
[ "$ok" = 1 ] || fail "mixed/e012.bin was not fetched ahead of a walk over files and directories;" \
	"$(why_not_ahead "$T/mnt")"
log "ahead of large files: 32 MiB at most, a chunk (8 MiB) of each"
"$PY" -c 'import sys
for n in (0, 1, 2):
    open("%s/b%02d" % (sys.argv[1], n), "rb").read()' "$T/mnt/big"
for _ in $(seq 100); do
	[ "$(xattr "$T/mnt/big/b06" user.ferry.cached)" = $((8 << 20)) ] && break
	sleep 0.1
done
[ "$(xattr "$T/mnt/big/b06" user.ferry.cached)" = $((8 << 20)) ] ||
	fail "big/b06's first chunk was not fetched ahead;" \
		"cached $(xattr "$T/mnt/big/b06" user.ferry.cached); $(why_not_ahead "$T/mnt")"
sleep 0.5
for f in b07 b08 b14; do
	[ "$(xattr "$T/mnt/big/$f" user.ferry.cached)" = 0 ] ||
		fail "big/$f, past 32 MiB ahead, was fetched ($(xattr "$T/mnt/big/$f" user.ferry.cached) bytes)"
done
log "the whole walk reads the source's bytes"
same_tree "$T/src" "$T/mnt"
log "a second walk, over cached files, fetches nothing ahead"
before=$(stat_json "$T/mnt" dir_readahead_files)
fetched=$(stat_json "$T/mnt" bytes_fetched)
same_tree "$T/src" "$T/mnt" >/dev/null
[ "$(stat_json "$T/mnt" dir_readahead_files)" = "$before" ] ||
	fail "a walk over cached files started fetches ahead"
[ "$(stat_json "$T/mnt" bytes_fetched)" = "$fetched" ] || fail "a walk over cached files fetched bytes"
umount_ferry "$T/mnt"

log "opens out of order fetch only what they open"
: >"$NGINX_STATE/access.log"
mount_ferry "$url" "$T/mnt2" --cache-dir "$T/cache2"
open_read "$T/mnt2/d" 50 20 70 5 90 91 30 31
sleep 0.5
[ "$(stat_json "$T/mnt2" dir_readahead_files)" = 0 ] || fail "out-of-order opens fetched ahead"
[ "$(gets_of | tr '\n' ' ')" = "/d/f005.bin /d/f020.bin /d/f030.bin /d/f031.bin /d/f050.bin /d/f070.bin /d/f090.bin /d/f091.bin " ] ||
	fail "nginx served other files than those opened: $(gets_of | tr '\n' ' ')"
umount_ferry "$T/mnt2"

log "--dir-readahead 0: an in-order walk fetches only what it opens"
: >"$NGINX_STATE/access.log"
mount_ferry "$url" "$T/mnt3" --cache-dir "$T/cache3" --dir-readahead 0
open_read "$T/mnt3/d" 0 1 2 3 4 5
sleep 0.5
[ "$(stat_json "$T/mnt3" dir_readahead_files)" = 0 ] || fail "--dir-readahead 0 fetched ahead"
[ "$(gets_of | wc -l)" = 6 ] || fail "nginx served $(gets_of | wc -l) files for 6 opened"
umount_ferry "$T/mnt3"

log "a walk whose readahead the fetch engine turned away (its memory bound full) asks again"
# Every GET of a file hangs before its body, so the first readahead jobs hold the engine's
# readahead memory until the stall timeout and the rest of the window may be turned away: the
# walk's next opens must queue them again, or they are never fetched ahead (the flaky failure
# of the first check under load, when the store lagged behind).
nr_cached() { # MOUNTDIR FIRST LAST: how many of d/fFIRST..fLAST are cached whole
	"$PY" - "$1/d" "$T/src/d" "$2" "$3" <<'PY'
import os, sys
mnt, src, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names = ["f%03d.bin" % n for n in range(first, last + 1)]
print(sum(os.getxattr(os.path.join(mnt, n), "user.ferry.cached").decode() ==
          str(os.path.getsize(os.path.join(src, n))) for n in names))
PY
}
open_only() { # MOUNTDIR N...: opens and closes files fNNN.bin in the order given, reading nothing
	"$PY" -c 'import sys
for n in sys.argv[2:]:
    open("%s/f%03d.bin" % (sys.argv[1], int(n)), "rb").close()' "$@"
}
start_faultserver "$T/src" --mode stallheaders
mount_ferry "$FAULT_URL/" "$T/mnt4" --cache-dir "$T/cache4" --stall-timeout 3s
open_only "$T/mnt4/d" 0 1 2
for _ in $(seq 100); do
	[ "$(fault_count)" -ge 16 ] && break
	sleep 0.1
done
[ "$(fault_count)" -ge 16 ] || fail "the walk's readahead sent $(fault_count) GETs, not 16"
fault_set "mode=ok"
for _ in $(seq 100); do
	[ "$(nr_cached "$T/mnt4" 3 34)" -ge 16 ] && break
	sleep 0.1
done
[ "$(nr_cached "$T/mnt4" 3 34)" -ge 16 ] ||
	fail "the stalled readahead never finished; $(why_not_ahead "$T/mnt4" $(seq 3 34))"
# Counted in bytes, readahead memory holds all 32 small files at once: none was turned away.
for _ in $(seq 100); do
	[ "$(nr_cached "$T/mnt4" 3 34)" = 32 ] && break
	sleep 0.1
done
[ "$(nr_cached "$T/mnt4" 3 34)" = 32 ] || fail "the engine turned away small files of the" \
	"window: $(nr_cached "$T/mnt4" 3 34) of f003..f034 cached;" \
	"$(why_not_ahead "$T/mnt4" $(seq 3 34))"
# The next open queues again what was turned away: up to 17 files, of which the bound may turn
# a few away again (when the store lags the queueing); the open after it asks for those. Without
# asking again, only the 16 that stalled and f035 would be cached.
open_only "$T/mnt4/d" 3
for _ in $(seq 100); do
	[ "$(nr_cached "$T/mnt4" 4 35)" -ge 24 ] && break
	sleep 0.1
done
[ "$(nr_cached "$T/mnt4" 4 35)" -ge 24 ] || fail "files turned away were not fetched ahead at" \
	"the walk's next open: $(nr_cached "$T/mnt4" 4 35) of f004..f035 cached;" \
	"$(why_not_ahead "$T/mnt4" $(seq 3 36))"
open_only "$T/mnt4/d" 4
for _ in $(seq 100); do
	[ "$(nr_cached "$T/mnt4" 5 36)" = 32 ] && break
	sleep 0.1
done
[ "$(nr_cached "$T/mnt4" 5 36)" = 32 ] || fail "$(nr_cached "$T/mnt4" 5 36) of f005..f036" \
	"cached after two more opens; $(why_not_ahead "$T/mnt4" $(seq 3 37))"
umount_ferry "$T/mnt4"
pass
