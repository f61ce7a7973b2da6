#!/usr/bin/env bash
# Runs fio (libaio, O_DIRECT) and `swapcoord bench` side by side on the same directory,
# file size, block size and queue depth, alternating them for several rounds so that
# both see the same disk conditions, and prints per-round figures, the medians and the
# ratio swapcoord/fio.
#
#   bench/fio_compare.sh [--dir DIR] [--size 1G] [--bs 1M] [--qd 32] [--rounds 5]
#                        [--swapcoord PATH] [--backend libaio]
#
# Both tools overwrite a file that already exists at full size (fio: laid out by a first
# untimed run; swapcoord: preallocated and filled before timing), and read it back.
# fio's figures are its bw (KiB/s) x 1024 / 1e9; swapcoord's are its table's GB/s.
set -euo pipefail

dir=${TMPDIR:-/tmp}
size=1G
bs=1M
qd=32
rounds=5
backend=libaio
here=$(cd "$(dirname "$0")/.." && pwd)
swapcoord=${SWAPCOORD:-$here/build/release/bin/swapcoord}  # the release preset's binary
[ -x "$swapcoord" ] || [ -n "${SWAPCOORD:-}" ] || swapcoord=$here/build/bin/swapcoord

while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --bs) bs=$2; shift 2 ;;
    --qd) qd=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --swapcoord) swapcoord=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fio_compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

command -v fio >/dev/null || { echo "fio_compare.sh: fio is not installed (scripts/setup installs it)" >&2; exit 2; }
[ -x "$swapcoord" ] || { echo "fio_compare.sh: no swapcoord binary at '$swapcoord' (build first, or pass --swapcoord)" >&2; exit 2; }
[ -d "$dir" ] || { echo "fio_compare.sh: --dir '$dir' is not a directory" >&2; exit 2; }

work=$(mktemp -d "$dir/fio-compare-XXXXXX")
trap 'rm -rf "$work"' EXIT
fio_file=$work/fio.dat

fio_bw() {  # fio_bw write|read -> GB/s
  local rw=$1 field
  [ "$rw" = write ] && field=48 || field=7
  fio --name=cmp --filename="$fio_file" --size="$size" --bs="$bs" --iodepth="$qd" \
      --ioengine=libaio --direct=1 --rw="$rw" --numjobs=1 --minimal 2>/dev/null |
    awk -F';' -v f="$field" '{ printf "%.2f", $f * 1024 / 1e9 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# fio_compare: dir $dir  size $size  block size $bs  queue depth $qd  rounds $rounds"
echo "# fio $(fio --version)  vs  $($swapcoord --version 2>/dev/null | head -1) ($backend)"
fio --name=layout --filename="$fio_file" --size="$size" --bs="$bs" --iodepth="$qd" \
    --ioengine=libaio --direct=1 --rw=write --minimal >/dev/null 2>&1
printf '# %5s %14s %14s %14s %14s\n' round fio_write swapcoord_write fio_read swapcoord_read
printf '# %5s %14s %14s %14s %14s\n' "" "(GB/s)" "(GB/s)" "(GB/s)" "(GB/s)"
fw=() sw=() fr=() sr=()
for r in $(seq 1 "$rounds"); do
  a=$(fio_bw write)
  b=$(fio_bw read)
  row=$("$swapcoord" bench --dir "$work" --size "$size" --block-size "$bs" --queue-depth "$qd" \
        --backend "$backend" --direct on --iters 1 2>/dev/null | awk '!/^#/ && NF == 8 { print $5, $7 }')
  c=${row% *}
  d=${row#* }
  fw+=("$a"); fr+=("$b"); sw+=("$c"); sr+=("$d")
  printf '  %5s %14s %14s %14s %14s\n' "$r" "$a" "$c" "$b" "$d"
done
mfw=$(printf '%s\n' "${fw[@]}" | median); msw=$(printf '%s\n' "${sw[@]}" | median)
mfr=$(printf '%s\n' "${fr[@]}" | median); msr=$(printf '%s\n' "${sr[@]}" | median)
printf '# %5s %14s %14s %14s %14s\n' median "$mfw" "$msw" "$mfr" "$msr"
awk -v a="$mfw" -v b="$msw" -v c="$mfr" -v d="$msr" 'BEGIN {
  printf "# ratio swapcoord/fio: write %.2f  read %.2f\n", b / a, d / c }'
