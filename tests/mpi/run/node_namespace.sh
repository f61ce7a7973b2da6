#!/bin/sh
# Runs one MPI rank as a rank of an emulated node with its own filesystem:
#   node_namespace.sh WORK RANKS_PER_NODE CMD [ARGS...]
# node n = rank / RANKS_PER_NODE (rank from OMPI_COMM_WORLD_RANK, else PMIX_RANK, else
# SLURM_PROCID). CMD runs in a new mount namespace (unshare -m, propagation private) in
# which WORK/node-<n> is bind-mounted on WORK/root: every node sees its own private
# directory at the same path WORK/root, the ranks of one node share it, the ranks of other
# nodes cannot see it, and nothing reaches the real WORK/root. Everything else under WORK
# (e.g. WORK/shared, the catalog directory) is the same for all. The mount goes away with
# the namespace, i.e. when the rank's process exits. SWAPCOORD_TEST_NODE=<n> is exported
# for `--node-key env:SWAPCOORD_TEST_NODE`. Needs root (or CAP_SYS_ADMIN).
set -eu
if [ $# -lt 3 ]; then
  echo "usage: $0 WORK RANKS_PER_NODE CMD [ARGS...]" >&2
  exit 2
fi
work=$1 per_node=$2
shift 2
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
SWAPCOORD_TEST_NODE=$((rank / per_node))
export SWAPCOORD_TEST_NODE
private=$work/node-$SWAPCOORD_TEST_NODE
mkdir -p "$private" "$work/root"
# shellcheck disable=SC2016  # $1.. are the inner shell's arguments
# exec keeps the rank's pid (mpirun's signals and --crash-at's SIGKILL reach the program).
exec unshare -m --propagation private -- /bin/sh -c '
  if ! mount --bind "$1" "$2"; then
    echo "node_namespace.sh: rank $3: cannot bind-mount $1 on $2" >&2
    exit 97
  fi
  shift 3
  exec "$@"' node_namespace "$private" "$work/root" "$rank" "$@"
