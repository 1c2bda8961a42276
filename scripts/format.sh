#!/usr/bin/env bash
# Formats ferry's C and CUDA sources (fs/, loader/, train/, kernels/, mount/, tests/) with the
# root .clang-format, using clang-format 14 (Debian 12's; other versions format differently).
#   scripts/format.sh           formats them in place
#   scripts/format.sh --check   changes nothing; names each file that is not formatted and
#                               exits 1 (a test of the suite: tests/meson.build)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
"" | --check) ;;
*) echo "usage: scripts/format.sh [--check]" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null ||
	{ echo "format.sh: no clang-format on PATH (scripts/deps.sh installs it)" >&2; exit 1; }
mapfile -t files < <(find fs loader train kernels mount tests -type f \
	\( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
[ "${#files[@]}" -gt 0 ] || { echo "format.sh: no sources found under $PWD" >&2; exit 1; }

if [ -z "$mode" ]; then
	clang-format -i --style=file "${files[@]}"
	exit 0
fi
bad=()
for f in "${files[@]}"; do
	clang-format --style=file "$f" | cmp -s "$f" - || bad+=("$f")
done
[ "${#bad[@]}" -eq 0 ] && { echo "format.sh: ${#files[@]} files formatted"; exit 0; }
echo "format.sh: ${#bad[@]} of ${#files[@]} files are not formatted (scripts/format.sh formats them):" >&2
printf '  %s\n' "${bad[@]}" >&2
exit 1
