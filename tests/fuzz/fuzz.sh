#!/usr/bin/env bash
# Fuzzes the shard header parsers with libFuzzer (clang -fsanitize=fuzzer,address,undefined)
# for SECONDS (default 60), starting from a copy of corpus/shard; crashes land in $OUT or
# /tmp. usage: tests/fuzz/fuzz.sh [SECONDS]   Not run by `meson test` (the corpus replay is).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
secs=${1:-60}
command -v clang >/dev/null || { echo "SKIP: no clang"; exit 77; }
tmp=$(mktemp -d /tmp/ferry_fuzz.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# config.h as meson writes it; the parsers need nothing from it.
printf '#define FERRY_VERSION "fuzz"\n#define HAVE_IO_URING 0\n#define HAVE_CUDA 0\n' >"$tmp/config.h"
clang -g -O1 -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-I"$tmp" -I"$src" "$here/fuzz_shard.c" "$src/loader/shard.c" -o "$tmp/fuzz_shard"
mkdir -p "$tmp/corpus"
cp "$here"/corpus/shard/* "$tmp/corpus/"
cd "${OUT:-/tmp}"
"$tmp/fuzz_shard" -max_total_time="$secs" -max_len=8192 "$tmp/corpus"
echo "fuzz.sh: no crash in $secs s; $(ls "$tmp/corpus" | wc -l) corpus entries"
