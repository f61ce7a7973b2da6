#!/usr/bin/env bash
# The cost of committing an epoch to the catalog beside that epoch's swap-out:
#   bench/commit_overhead.sh [--dir DIR] [--ranks 2] [--preset gpt-1.3b] [--swap both] [--steps 2]
# runs `swapcoord run` and prints, per epoch, the swap-out time, the commit time and the
# ratio (commit / swap-out), from the job's table (slowest rank's times).
set -euo pipefail
dir=${TMPDIR:-/tmp} ranks=2 preset=gpt-1.3b swap=both steps=2
here=$(cd "$(dirname "$0")/.." && pwd)
swapcoord=${SWAPCOORD:-$here/build/release/bin/swapcoord}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --swap) swap=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --swapcoord) swapcoord=$2; shift 2 ;;
    *) echo "commit_overhead.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d "$dir/commit-overhead-XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
flags=()
mpirun --version 2>/dev/null | grep -q 'Open MPI' && flags+=(--oversubscribe)
mpirun -np "$ranks" "${flags[@]}" "$swapcoord" run --roots "$work" --preset "$preset" --scale 1 \
  --swap "$swap" --steps "$steps" --no-verify --buffer-size 64M | tee "$work/out" | grep -E '^# (model|plan)'
printf '# %5s %14s %12s %10s %9s\n' epoch bytes 'swap-out(s)' 'commit(s)' ratio
awk '!/^#/ && $2 == "swap-out" { out[$3] = $5; bytes[$3] = $4 }
     !/^#/ && $2 == "commit"   { commit[$3] = $5 }
     END { for (e in out) printf "  %5s %14s %12.3f %10.4f %8.2f%%\n", e, bytes[e], out[e], commit[e], 100 * commit[e] / out[e] }' \
  "$work/out" | sort -n
