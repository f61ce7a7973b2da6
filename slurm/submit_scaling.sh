#!/usr/bin/env bash
# Submits a scaling sweep: one slurm/scaling.sbatch job per point of
# nodes x ranks-per-node [x queue depth] [x block size], all writing JSON into one sweep
# directory; then `slurm/collect_scaling SWEEP_DIR` makes the CSV and the plots.
#
#   slurm/submit_scaling.sh -n "1 2 4" -r "1 2 4 8" [-q "8 32"] [-b "1M 4M"] [-o DIR] [--wait]
#                           [-- extra sbatch arguments, e.g. -p nvme -A myproject]
#
# The swapcoord settings (SWAPCOORD_BIN, SWAPCOORD_PRESET, ...) come from the environment
# as for swapcoord.sbatch. Each point's catalog goes to SWAPCOORD_CATALOG_DIR if it has %j
# (the job id), else to SWAPCOORD_CATALOG_DIR/catalog-<jobid>, by default to
# DIR/catalog-<jobid> (DIR must be on a shared file system). Prints one line per job
# (jobid nodes ranks_per_node qd bs) and writes them to DIR/jobs.txt.
# --wait: return when every job has ended (exit 1 if one failed).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
nodes="1 2"; rpn="1 2"; qds=""; bss=""; sweep=""; wait=0; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nodes) nodes=$2; shift 2 ;;
    -r|--ranks-per-node) rpn=$2; shift 2 ;;
    -q|--queue-depths) qds=$2; shift 2 ;;
    -b|--block-sizes) bss=$2; shift 2 ;;
    -o|--out) sweep=$2; shift 2 ;;
    --wait) wait=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "submit_scaling.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sweep=${sweep:-$PWD/swapcoord-sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$sweep"
sweep=$(cd "$sweep" && pwd)
export SWAPCOORD_SLURM_DIR=$here SWAPCOORD_OUT=$sweep
# Every point is its own job with its own catalog: one directory per job id.
catalog_dir=${SWAPCOORD_CATALOG_DIR:-$sweep}
[[ $catalog_dir == *%j* ]] || catalog_dir=$catalog_dir/catalog-%j
export SWAPCOORD_CATALOG_DIR=$catalog_dir
: >>"$sweep/jobs.txt"

ids=()
for n in $nodes; do
  for r in $rpn; do
    for q in ${qds:-default}; do
      for b in ${bss:-default}; do
        env=()
        [ "$q" != default ] && env+=(SWAPCOORD_QUEUE_DEPTH="$q")
        [ "$b" != default ] && env+=(SWAPCOORD_BLOCK_SIZE="$b")
        id=$(env "${env[@]}" sbatch --parsable -N "$n" --ntasks-per-node="$r" \
               --job-name="swapcoord-${n}x${r}" -o "$sweep/slurm-%j.log" "${extra[@]}" \
               "$here/scaling.sbatch")
        id=${id%%;*}
        ids+=("$id")
        echo "$id $n $r $q $b" | tee -a "$sweep/jobs.txt"
      done
    done
  done
done
echo "# ${#ids[@]} jobs; results in $sweep (then: $here/collect_scaling $sweep)" >&2

if [ $wait = 1 ]; then
  failed=0
  for id in "${ids[@]}"; do
    while squeue -h -j "$id" 2>/dev/null | grep -q .; do sleep 2; done
    state=$(sacct -n -X -P -o State -j "$id" 2>/dev/null | head -n1 || true)
    [ -n "$state" ] || state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    if [ -n "$state" ] && [ "$state" != COMPLETED ]; then
      echo "job $id: $state (see $sweep/slurm-$id.log)" >&2
      failed=1
    fi
  done
  exit $failed
fi
