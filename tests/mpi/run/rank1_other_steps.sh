#!/usr/bin/env bash
# Runs `APP ARGS...` with the value after --steps replaced by 5 on rank 1 only: ranks that
# were given different configurations (run.ranks_disagree).
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}
args=()
previous=""
for a in "$@"; do
  if [ "$previous" = "--steps" ] && [ "$rank" = 1 ]; then a=5; fi
  args+=("$a")
  previous=$a
done
exec "${args[@]}"
