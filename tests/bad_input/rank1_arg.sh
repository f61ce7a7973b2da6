#!/usr/bin/env bash
# Runs `CMD...` with the value after FLAG replaced by VALUE on rank 1 only (ranks given
# different command lines, for the bad-input table's "ranks" cases).
#   rank1_arg.sh FLAG VALUE CMD...
flag=$1 value=$2
shift 2
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}
args=()
previous=""
for a in "$@"; do
  if [ "$previous" = "$flag" ] && [ "$rank" = 1 ]; then a=$value; fi
  args+=("$a")
  previous=$a
done
exec "${args[@]}"
