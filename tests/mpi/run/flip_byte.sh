#!/usr/bin/env bash
# Damages one byte of a file in place (as a bad disk or a stray program would): the byte at
# OFFSET is replaced by its complement, so it differs for sure.
#   flip_byte.sh FILE [OFFSET]
set -eu
file=$1 offset=${2:-0}
byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
[ -n "$byte" ] || { echo "flip_byte.sh: '$file' has no byte at offset $offset" >&2; exit 1; }
# shellcheck disable=SC2059
printf "\\$(printf %03o $((byte ^ 0xff)))" | dd of="$file" bs=1 seek="$offset" count=1 conv=notrunc status=none
echo "flip_byte.sh: byte $offset of '$file': $byte -> $((byte ^ 0xff))"
