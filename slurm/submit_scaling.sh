#!/usr/bin/env bash
# Submits a scaling sweep: one slurm/scaling.sbatch job per point of
# mode x nodes x ranks-per-node [x queue depth] [x block size], each point --repeats times,
# plus the bench jobs that measure the per-node raw ceiling, all writing JSON into one sweep
# directory; then `slurm/collect_scaling SWEEP_DIR` makes the CSVs and the plots.
#
#   slurm/submit_scaling.sh -n "1 2 4" -r "1 2 4 8" [-q "8 32"] [-b "1M 4M"] [-o DIR]
#                           [-m strong|weak|both] [-k REPEATS] [--no-bench] [--wait]
#                           [-- extra sbatch arguments, e.g. -p nvme -A myproject]
#
# -m strong (default): every point runs the model as given (SWAPCOORD_PRESET at
#    SWAPCOORD_SCALE): the total bytes are fixed. -m weak: a point of p ranks runs the preset
#    at scale SWAPCOORD_SCALE x sqrt(p), so the bytes per rank stay those of the model as
#    given on 1 rank (the bytes grow with scale^2; scale may not pass 4). -m both: both.
# -k N: each point N times (repeat 1..N, in N rounds over all points).
# Bench: by default one SWAPCOORD_MODE=bench job per queue depth x block size on the largest
#    node count: one `swapcoord bench` per node (on its first root, SWAPCOORD_BENCH_SIZE bytes,
#    the sweep's SWAPCOORD_BACKEND, _BLOCK_SIZE, _QUEUE_DEPTH and _THREADS; not
#    SWAPCOORD_EXTRA_ARGS, which are `run` flags); --no-bench: none.
# The swapcoord settings (SWAPCOORD_BIN, SWAPCOORD_PRESET, ...) come from the environment
# as for swapcoord.sbatch. Each point's catalog goes to SWAPCOORD_CATALOG_DIR if it has %j
# (the job id), else to SWAPCOORD_CATALOG_DIR/catalog-<jobid>, by default to
# DIR/catalog-<jobid> (DIR must be on a shared file system). Prints one line per job
# (jobid nodes ranks_per_node qd bs mode repeat) and adds them to DIR/jobs.txt.
# --wait: return when every job has ended (exit 1 if one failed).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-2}"; }
die() { echo "submit_scaling.sh: $*" >&2; exit 2; }
nodes="1 2"; rpn="1 2"; qds=""; bss=""; sweep=""; wait=0; extra=()
mode=strong; repeats=1; bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nodes) nodes=$2; shift 2 ;;
    -r|--ranks-per-node) rpn=$2; shift 2 ;;
    -q|--queue-depths) qds=$2; shift 2 ;;
    -b|--block-sizes) bss=$2; shift 2 ;;
    -o|--out) sweep=$2; shift 2 ;;
    -m|--mode) mode=$2; shift 2 ;;
    -k|--repeats) repeats=$2; shift 2 ;;
    --no-bench) bench=0; shift ;;
    --wait) wait=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "submit_scaling.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$mode" in
  strong) modes=strong ;;
  weak) modes=weak ;;
  both) modes="strong weak" ;;
  *) die "--mode must be strong, weak or both, not '$mode'" ;;
esac
[[ $repeats =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer, not '$repeats'"
for v in $nodes $rpn; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "--nodes and --ranks-per-node take positive integers, not '$v'"
done
[ "${SWAPCOORD_MODE:-run}" = run ] ||
  die "SWAPCOORD_MODE=$SWAPCOORD_MODE is set: a sweep's points are runs, and its bench jobs are the ceiling (--no-bench drops them); unset it"
scale=${SWAPCOORD_SCALE:-0.25}  # swapcoord.sbatch's default
# weak_scale P: the preset scale of a weak point of P ranks
weak_scale() { awk -v s="$scale" -v p="$1" 'BEGIN { printf "%.6g", s * sqrt(p) }'; }
if [ "$mode" != strong ]; then
  [[ $scale =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || die "SWAPCOORD_SCALE '$scale' is not a number"
  # A tensor list (--tensors) has no scale to grow: a weak point would run the same bytes.
  [[ " ${SWAPCOORD_EXTRA_ARGS:-} " != *" --tensors"* ]] ||
    die "--mode $mode grows the preset's scale, but SWAPCOORD_EXTRA_ARGS has --tensors (use --mode strong)"
  for n in $nodes; do
    for r in $rpn; do
      s=$(weak_scale $((n * r)))
      awk -v s="$s" 'BEGIN { exit !(s > 4) }' &&
        die "weak point ${n}x${r}: scale $scale x sqrt($((n * r))) = $s is over 4, the largest --scale (lower SWAPCOORD_SCALE)"
    done
  done
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sweep=${sweep:-$PWD/swapcoord-sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$sweep"
sweep=$(cd "$sweep" && pwd)
export SWAPCOORD_SLURM_DIR=$here SWAPCOORD_OUT=$sweep
# Every point is its own job with its own catalog: one directory per job id.
catalog_dir=${SWAPCOORD_CATALOG_DIR:-$sweep}
[[ $catalog_dir == *%j* ]] || catalog_dir=$catalog_dir/catalog-%j
export SWAPCOORD_CATALOG_DIR=$catalog_dir
[ -s "$sweep/jobs.txt" ] || echo "# jobid nodes ranks_per_node queue_depth block_size mode repeat" >"$sweep/jobs.txt"

ids=()
# submit NODES RANKS_PER_NODE QD BS MODE REPEAT ENV...: one job, recorded in jobs.txt
submit() {
  local n=$1 r=$2 q=$3 b=$4 m=$5 k=$6 id
  shift 6
  local env=("$@")
  [ "$q" != default ] && env+=(SWAPCOORD_QUEUE_DEPTH="$q")
  [ "$b" != default ] && env+=(SWAPCOORD_BLOCK_SIZE="$b")
  id=$(env "${env[@]}" SWAPCOORD_SCALING_MODE="$m" sbatch --parsable -N "$n" --ntasks-per-node="$r" \
         --job-name="swapcoord-$m-${n}x${r}" -o "$sweep/slurm-%j.log" "${extra[@]}" \
         "$here/scaling.sbatch")
  id=${id%%;*}
  ids+=("$id")
  echo "$id $n $r $q $b $m $k" | tee -a "$sweep/jobs.txt"
}

if [ $bench = 1 ]; then
  max_nodes=0
  for n in $nodes; do [ "$n" -gt "$max_nodes" ] && max_nodes=$n; done
  for q in ${qds:-default}; do
    for b in ${bss:-default}; do
      submit "$max_nodes" 1 "$q" "$b" bench 1 SWAPCOORD_MODE=bench SWAPCOORD_EXTRA_ARGS=
    done
  done
fi
for ((k = 1; k <= repeats; k++)); do
  for m in $modes; do
    for n in $nodes; do
      for r in $rpn; do
        s=$scale
        [ "$m" = weak ] && s=$(weak_scale $((n * r)))
        for q in ${qds:-default}; do
          for b in ${bss:-default}; do
            submit "$n" "$r" "$q" "$b" "$m" "$k" SWAPCOORD_MODE=run SWAPCOORD_SCALE="$s"
          done
        done
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
