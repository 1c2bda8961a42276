#!/usr/bin/env bash
# ferry over HTTP against the limits measured in the same run (issues 2 and 10): nginx on
# loopback serves a 2 GiB random file, four files of a quarter of that, 4,000 files of 64 KiB
# and a 40 MB token file; each ferry case is printed next to its limit and the ratio, as a
# markdown table.
#   cold sequential read (dd bs=1M)   vs 8 parallel curl range streams into files on the
#                                        cache's file system
#   4 readers on 4 cold files at once  vs 8 parallel curl range streams of the same 4 files
#   read after drop_caches, from cache vs dd of the cache's own data file after the same drop
#   re-read from the page cache        vs dd of the source file from the page cache
#   random 4 KiB reads, 16 in flight   vs the same fio job (buffered, both warm) on the cache's
#                                        data file; and, for information, the mount with O_DIRECT
#   4,000 small files, cold cat        vs 8 parallel curl fetching the same files onto disk
#   4,000 small files, warm cat        vs cat of the source files
#   a PyTorch DataLoader, memmap per   vs the same script on the source directory
#     sample, warm epoch
# and the daemon's peak RSS (VmHWM) while it streams the big file, against its 256 MiB bound.
# Sizes for a quick run: BENCH_BIG_MB (2048), BENCH_NR_SMALL (4000), BENCH_SMALL_KB (64),
# BENCH_TOKENS_MB (40).
# BENCH_DATA keeps the generated data between runs (default /tmp/ferry-bench-data).
# BENCH_MOUNT_OPTS adds options to `ferry mount`. Needs root for drop_caches (else n/a).
# BENCH_ONLY runs some of the cases, for a quick look at one change: a list of cold, disk,
# page, fio, four, small, loader (default: all); the others print n/a. Without cold, the big
# file is read into the cache once, untimed, for disk, page and fio.
. "$(dirname "$0")/../integ/lib.sh"
need_fuse
big_mb=${BENCH_BIG_MB:-2048}
nr_small=${BENCH_NR_SMALL:-4000}
small_kb=${BENCH_SMALL_KB:-64}
tokens_mb=${BENCH_TOKENS_MB:-40}
data=${BENCH_DATA:-/tmp/ferry-bench-data}
read -r -a mount_opts <<<"${BENCH_MOUNT_OPTS:-}"
big_bytes=$((big_mb << 20))
small_bytes=$((nr_small * small_kb << 10))
quarter_mb=$(((big_mb + 3) / 4))
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the machine skews every ratio
only=" ${BENCH_ONLY:-cold disk page fio four small loader} "
want() { [[ $only == *" $1 "* ]]; }

now() { date +%s.%N; }
mbps() { # bytes t0 t1
	"$PY" -c "import sys; b, t0, t1 = map(float, sys.argv[1:]); print('%.0f' % (b / (t1 - t0) / 1e6))" "$@"
}
can_drop=0
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
drop_caches 2>/dev/null && can_drop=1

log "data in $data: ${big_mb} MiB file, 4 of $quarter_mb MiB, $nr_small files of $small_kb KiB," \
	"$tokens_mb MB of tokens"
stamp="$big_mb $nr_small $small_kb $tokens_mb"
if [ "$(cat "$data/.stamp" 2>/dev/null)" != "$stamp" ]; then
	rm -rf "$data"
	mkdir -p "$data/small" "$data/four" "$data/tokens"
	"$PY" - "$data" "$big_mb" "$nr_small" "$small_kb" "$quarter_mb" "$tokens_mb" <<'PY'
import os, sys
root = sys.argv[1]
big_mb, nr, kb, quarter_mb, tokens_mb = map(int, sys.argv[2:])
def random_file(path, nr_bytes):
    with open(path, "wb") as f:
        while nr_bytes:
            n = min(nr_bytes, 1 << 20)
            f.write(os.urandom(n))
            nr_bytes -= n
random_file(os.path.join(root, "big.bin"), big_mb << 20)
for i in range(4):
    random_file(os.path.join(root, "four", "f%d.bin" % i), quarter_mb << 20)
for i in range(nr):
    random_file(os.path.join(root, "small", "s%05d.bin" % i), kb << 10)
random_file(os.path.join(root, "tokens", "tokens.bin"), tokens_mb * 1000 * 1000)
PY
	echo "$stamp" >"$data/.stamp"
fi
serve_nginx "$data"
url="http://127.0.0.1:$PORT"
# the server reads from its page cache in every case
cat "$data/big.bin" "$data"/four/* "$data"/small/* "$data"/tokens/* >/dev/null
cache=$T/cache
lim=$T/limit
mkdir -p "$cache" "$lim"
declare -A F L # ferry and limit MB/s per case

# The cold case and its limit run twice, alternating, each ferry round on an empty cache, and
# the best of each counts: on this VM the first writes into memory just freed (after
# drop_caches, or after the other side deleted its 2 GiB) are several times slower than later
# ones, so a single round mostly measures which side ran first.
best() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

# curl_ranges DIR|- nr_streams FILE...: nr_streams parallel range GETs spread evenly over the
# files, into DIR (checked for size, then deleted) or into /dev/null for "-".
curl_ranges() {
	local dir=$1 nr=$2 f size per i a b
	shift 2
	local per_file=$((nr / $#))
	for f in "$@"; do
		size=$(stat -c %s "$data/$f")
		per=$(((size + per_file - 1) / per_file))
		for ((i = 0; i < per_file; i++)); do
			a=$((i * per)) b=$(((i + 1) * per - 1))
			[ "$b" -ge "$size" ] && b=$((size - 1))
			if [ "$dir" = - ]; then
				curl -sf -r "$a-$b" -o /dev/null "$url/$f" &
			else
				curl -sf -r "$a-$b" -o "$dir/${f//\//_}.$i" "$url/$f" &
			fi
		done
	done
	wait
	[ "$dir" = - ] && return 0
	local want=0 got
	for f in "$@"; do want=$((want + $(stat -c %s "$data/$f"))); done
	got=$(cat "$dir"/* | wc -c)
	[ "$got" = "$want" ] || fail "curl ranges fetched $got bytes of $want"
	rm -f "$dir"/*
}

# The daemon's peak resident set (VmHWM) in MiB.
daemon_peak_mib() { # mountpoint
	local pid
	pid=$(stat_json "$1" pid)
	awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"
}

want cold && for round in 1 2; do
	log "ferry (round $round): cold sequential read"
	if [ "$round" = 2 ]; then
		umount_ferry "$T/mnt"
		rm -rf "$cache"
		mkdir -p "$cache"
	fi
	mount_ferry "$url/" "$T/mnt" --cache-dir "$cache" --cache-size $((2 * big_mb + 1024))M \
		"${mount_opts[@]}"
	t0=$(now)
	dd if="$T/mnt/big.bin" of=/dev/null bs=1M status=none || fail "dd of big.bin through the mount failed"
	t1=$(now)
	F[cold]=$(best "${F[cold]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
	# The daemon was mounted for this read: its high-water mark is the streaming's.
	peak_mib=$(best "${peak_mib:-}" "$(daemon_peak_mib "$T/mnt")")

	log "limit (round $round): 8 parallel curl range streams of big.bin into files beside the cache"
	t0=$(now)
	curl_ranges "$lim" 8 big.bin
	t1=$(now)
	L[cold]=$(best "${L[cold]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
	t0=$(now)
	curl_ranges - 8 big.bin
	t1=$(now)
	L[cold_null]=$(best "${L[cold_null]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
done

if ! want cold && { want disk || want page || want fio; }; then
	mount_ferry "$url/" "$T/mnt" --cache-dir "$cache" --cache-size $((2 * big_mb + 1024))M \
		"${mount_opts[@]}"
	dd if="$T/mnt/big.bin" of=/dev/null bs=1M status=none || fail "dd of big.bin through the mount failed"
fi
want cold || want disk || want page || want fio && {
data_file=$(find "$cache" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
[ -n "$data_file" ] && [ "$(stat -c %s "$data_file")" -ge "$big_bytes" ] ||
	fail "no data file of big.bin's size in $cache"
if [ "$can_drop" = 1 ] && want disk; then
	for round in 1 2; do # best of 2, alternating, as for the cold case
		log "ferry (round $round): read after drop_caches, from the cache"
		drop_caches
		t0=$(now)
		dd if="$T/mnt/big.bin" of=/dev/null bs=1M status=none
		t1=$(now)
		F[disk]=$(best "${F[disk]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
		log "limit (round $round): dd of the cache's data file after drop_caches"
		drop_caches
		t0=$(now)
		dd if="$data_file" of=/dev/null bs=1M count=$big_mb status=none
		t1=$(now)
		L[disk]=$(best "${L[disk]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
	done
fi

# Page-cache copies swing by 1.5x from one pass to the next here (10.0 then 16.9 GB/s): best
# of 3 alternating passes each, after a pass that fills the page cache.
want page && dd if="$T/mnt/big.bin" of=/dev/null bs=1M status=none
want page && dd if="$data/big.bin" of=/dev/null bs=1M status=none
want page && for round in 1 2 3; do
	log "ferry (round $round): re-read while the page cache holds it"
	t0=$(now)
	dd if="$T/mnt/big.bin" of=/dev/null bs=1M status=none
	t1=$(now)
	F[page]=$(best "${F[page]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
	log "limit (round $round): dd of the source file from the page cache"
	t0=$(now)
	dd if="$data/big.bin" of=/dev/null bs=1M status=none
	t1=$(now)
	L[page]=$(best "${L[page]:-}" "$(mbps "$big_bytes" "$t0" "$t1")")
done
(cd "$data" && sha256sum big.bin) >"$T/want.sha"
(cd "$T/mnt" && sha256sum -c --quiet "$T/want.sha") || fail "big.bin through the mount differs"

# Random 4 KiB reads with the cache warm (issue 10: "random 4 KiB reads, 16 in flight, warm;
# limit: fio on the cache file"). The bar's row runs the same job on both sides, buffered:
# the mount's file and the cache's data file are both read once first, so both are in the page
# cache (keep_cache keeps the mount's), and neither side lets fio drop the page cache first
# (--invalidate=0; its default would). An extra row, for information only and not the bar's,
# runs the job with O_DIRECT on the mount against the same buffered limit: there every read
# crosses FUSE to the daemon (a read the kernel's copy does not answer), which is what the
# daemon's random-read path costs. It used to be the bar's row, comparing two different jobs.
# O_DIRECT on the data file is no limit for either: it would measure the disk, not a warm cache.
fio_mbps() { # file direct
	fio --name=rand --filename="$1" --direct="$2" --invalidate=0 --rw=randread --bs=4k \
		--ioengine=io_uring --iodepth=16 --size="$big_bytes" --time_based \
		--runtime="${BENCH_FIO_S:-5}" --randrepeat=0 --output-format=json 2>/dev/null |
		"$PY" -c 'import json, sys; print("%.0f" % (json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"] / 1e6))'
}
if ! want fio; then
	:
elif command -v fio >/dev/null; then
	cat "$data_file" >/dev/null
	cat "$T/mnt/big.bin" >/dev/null
	for round in 1 2; do
		log "ferry (round $round): fio random 4 KiB reads, 16 in flight, warm, buffered"
		v=$(fio_mbps "$T/mnt/big.bin" 0) || fail "fio on the mount failed"
		F[fio]=$(best "${F[fio]:-}" "$v")
		log "ferry (round $round): the same fio job with O_DIRECT on the mount (informational)"
		v=$(fio_mbps "$T/mnt/big.bin" 1) || fail "fio with O_DIRECT on the mount failed"
		F[fio_direct]=$(best "${F[fio_direct]:-}" "$v")
		log "limit (round $round): the same fio job on the cache's data file, buffered"
		v=$(fio_mbps "$data_file" 0) || fail "fio on the data file failed"
		L[fio]=$(best "${L[fio]:-}" "$v")
	done
else
	log "no fio: scripts/deps.sh installs it"
fi
umount_ferry "$T/mnt"
}

# Four readers at once, each on its own cold file; the limit fetches the same four files with
# 8 range streams (two per file) onto the cache's disk. Best of 2 alternating rounds.
four_bytes=$((4 * quarter_mb << 20))
four=(four/f0.bin four/f1.bin four/f2.bin four/f3.bin)
want four && for round in 1 2; do
	log "ferry (round $round): 4 readers on 4 cold files at once"
	rm -rf "$T/cache-four"
	mount_ferry "$url/" "$T/mnt" --cache-dir "$T/cache-four" \
		--cache-size $((2 * big_mb + 1024))M "${mount_opts[@]}"
	t0=$(now)
	for f in "${four[@]}"; do
		dd if="$T/mnt/$f" of=/dev/null bs=1M status=none &
	done
	wait
	t1=$(now)
	F[four]=$(best "${F[four]:-}" "$(mbps "$four_bytes" "$t0" "$t1")")
	(cd "$data" && sha256sum "${four[@]}") >"$T/want-four.sha"
	(cd "$T/mnt" && sha256sum -c --quiet "$T/want-four.sha") || fail "the four files differ"
	umount_ferry "$T/mnt"
	log "limit (round $round): 8 parallel curl range streams of the 4 files onto disk"
	t0=$(now)
	curl_ranges "$lim" 8 "${four[@]}"
	t1=$(now)
	L[four]=$(best "${L[four]:-}" "$(mbps "$four_bytes" "$t0" "$t1")")
done
rm -rf "$T/cache-four"

stat_line=
if want small; then
log "limit: 8 parallel curl fetching the $nr_small small files onto disk"
mkdir -p "$lim/small"
(cd "$data/small" && ls) >"$T/small.list"
split -n l/8 -d "$T/small.list" "$T/small.part."
t0=$(now)
for p in "$T"/small.part.*; do
	awk -v u="$url/small/" -v d="$lim/small/" '{ print "url = \"" u $0 "\"\noutput = \"" d $0 "\"" }' \
		"$p" >"$p.curl"
	curl -sf -K "$p.curl" &
done
wait
t1=$(now)
L[small_cold]=$(mbps "$small_bytes" "$t0" "$t1")
[ "$(ls "$lim/small" | wc -l)" = "$nr_small" ] || fail "curl fetched $(ls "$lim/small" | wc -l) small files"
rm -rf "$lim/small"

log "ferry: cold and warm cat of the $nr_small small files"
mount_ferry "$url/" "$T/mnt" --cache-dir "$T/cache-small" "${mount_opts[@]}"
t0=$(now)
(cd "$T/mnt/small" && cat -- * >/dev/null)
t1=$(now)
F[small_cold]=$(mbps "$small_bytes" "$t0" "$t1")
t0=$(now)
(cd "$T/mnt/small" && cat -- * >/dev/null)
t1=$(now)
F[small_warm]=$(mbps "$small_bytes" "$t0" "$t1")
log "limit: cat of the source files"
t0=$(now)
(cd "$data/small" && cat -- * >/dev/null)
t1=$(now)
L[small_warm]=$(mbps "$small_bytes" "$t0" "$t1")
a=$(cd "$T/mnt/small" && cat -- * | sha256sum)
b=$(cd "$data/small" && cat -- * | sha256sum)
[ "$a" = "$b" ] || fail "small files through the mount differ"
stat_line=$(timeout 30 "$FERRY" stat "$T/mnt" --json 2>/dev/null | tr -d '\n' | cut -c1-300 || true)
umount_ferry "$T/mnt"
fi

# An unmodified training script pointed at the mount: a PyTorch DataLoader (2 workers,
# shuffled) whose dataset opens an np.memmap per sample, as many scripts do, and reads one
# 1024-token window from it. Each sample costs a lookup, an open, a mapping and a close, so this
# is the per-open path. Without PyTorch, a multiprocessing pool of 2 does the same per sample.
cat >"$T/windows.py" <<'PY'
import sys, time
import numpy as np
CTX = 1024
path, epochs = sys.argv[1], int(sys.argv[2])
def window(i):
    m = np.memmap(path, dtype=np.uint16, mode="r")
    w = np.array(m[i * CTX:(i + 1) * CTX + 1], dtype=np.int64)
    del m
    return w
n = (np.memmap(path, dtype=np.uint16, mode="r").shape[0] - 1) // CTX
try:
    import torch
    from torch.utils.data import Dataset, DataLoader
    class Windows(Dataset):
        def __len__(self):
            return n
        def __getitem__(self, i):
            w = torch.from_numpy(window(i))
            return w[:-1], w[1:]
    torch.manual_seed(0)
    loader = DataLoader(Windows(), batch_size=32, shuffle=True, num_workers=2)
    def epoch():
        return sum(int(x[:, 0].sum()) for x, _ in loader)
except ImportError:
    import multiprocessing, random
    pool = multiprocessing.Pool(2)
    def epoch():
        order = list(range(n))
        random.shuffle(order)
        return sum(int(w[0]) for w in pool.imap_unordered(window, order, chunksize=32))
best = None
for e in range(epochs):
    t0 = time.perf_counter()
    check = epoch()
    t = time.perf_counter() - t0
    if e and (best is None or t < best):  # epoch 0 warms the cache
        best = t
print("%.0f %d" % (n * CTX * 2 / best / 1e6, check))
PY
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
	loader_name="PyTorch DataLoader (2 workers, shuffled)"
else
	loader_name="no PyTorch here: a multiprocessing pool of 2"
fi
tokens_mnt=$T/mnt/tokens/tokens.bin
if want loader; then
log "ferry: $loader_name, np.memmap per sample of $tokens_mnt, warm epochs"
mount_ferry "$url/" "$T/mnt" --cache-dir "$T/cache-tokens" "${mount_opts[@]}"
for round in 1 2; do
	read -r v fsum < <(/usr/bin/python3 "$T/windows.py" "$tokens_mnt" 3) ||
		fail "the loader script failed on the mount"
	F[loader]=$(best "${F[loader]:-}" "$v")
	log "limit (round $round): the same script on the source directory"
	read -r v lsum < <(/usr/bin/python3 "$T/windows.py" "$data/tokens/tokens.bin" 3) ||
		fail "the loader script failed on the source"
	L[loader]=$(best "${L[loader]:-}" "$v")
	[ "$fsum" = "$lsum" ] || fail "the loader read other tokens through the mount"
done
umount_ferry "$T/mnt"
fi

row() { # case ferry limit limit-name
	local r=n/a
	[ -n "$2" ] && [ -n "$3" ] && r=$("$PY" -c "print('%.2f' % ($2 / $3))")
	printf '| %s | %s | %s | %s | %s |\n' "$1" "${2:-n/a}" "${3:-n/a}" "$4" "$r"
}
echo
echo "ferry bench_http: $(nproc) cores, ${big_mb} MiB file, $nr_small x $small_kb KiB, MB/s (1e6 B/s)"
echo "load average (1, 5, 15 min): $load_at_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| case | ferry MB/s | limit MB/s | limit, same run | ratio |"
echo "|---|---|---|---|---|"
row "cold sequential read (dd bs=1M), best of 2 alternating rounds" "${F[cold]:-}" "${L[cold]:-}" \
	"8 parallel curl range streams into files on the cache's fs (into /dev/null: ${L[cold_null]:-n/a})"
row "4 readers on 4 cold files of $quarter_mb MiB at once, aggregate, best of 2" "${F[four]:-}" \
	"${L[four]:-}" "8 parallel curl range streams of the same 4 files onto disk"
row "read after drop_caches, from the cache, best of 2" "${F[disk]:-}" "${L[disk]:-}" \
	"dd of the cache's data file after the same drop"
row "re-read from the page cache, best of 3" "${F[page]:-}" "${L[page]:-}" "dd of the source file from page cache"
row "random 4 KiB reads, 16 in flight (fio, io_uring, buffered), warm, best of 2" \
	"${F[fio]:-}" "${L[fio]:-}" "the same fio job on the cache's data file"
row "(informational, not the bar's) the same fio job with O_DIRECT on the mount: every read to the daemon" \
	"${F[fio_direct]:-}" "${L[fio]:-}" "the buffered fio job on the cache's data file"
row "$nr_small small files, cold cat" "${F[small_cold]:-}" "${L[small_cold]:-}" \
	"8 parallel curl fetching the same files onto disk"
row "$nr_small small files, warm cat" "${F[small_warm]:-}" "${L[small_warm]:-}" "cat of the source files"
row "$loader_name, np.memmap per sample, 1024-token windows of $tokens_mb MB, best warm epoch" \
	"${F[loader]:-}" "${L[loader]:-}" "the same script on the source directory"
echo
echo "daemon peak RSS (VmHWM) while streaming the ${big_mb} MiB file: ${peak_mib:-n/a} MiB (bound: 256 MiB)"
echo "bars for issue 10: cold >= 0.85, 4 readers >= 0.85, from cache >= 0.95, re-read >= 0.6,"
echo "  fio >= 0.5, small cold >= 0.8, small warm >= 0.7, loader >= 0.8"
[ -n "$stat_line" ] && echo "ferry stat after the small files: $stat_line"
exit 0
