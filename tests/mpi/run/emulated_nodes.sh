#!/usr/bin/env bash
# Multi-node `swapcoord run` on one host, with nodes that do NOT share their swap roots.
#
# Every rank is started through node_namespace.sh, which puts it in its own mount namespace
# where its node's private directory WORK/node-<n> is bind-mounted on WORK/root (the same
# --roots path for every node), n = rank / 2: 2 nodes x 2 ranks. A node's ranks see only
# their node's files, as on a cluster with node-local NVMe; WORK/shared (the catalog
# directory) is the same for all, as a shared filesystem would be. Checks:
#   1. a run (--catalog-dir WORK/shared/<job>) ends with 0 wrong values on 2 nodes; node-0's
#      private directory holds files of ranks 0 and 1 only, node-1's of ranks 2 and 3 only;
#      the real WORK/root stays empty; catalog.h5 is in the catalog directory;
#   2. a run whose rank 3 is SIGKILLed before the commit of epoch 2 leaves a catalog of
#      epoch 1 (swapcoord inspect); --resume (same namespaces, 4 ranks) reads every piece on
#      the node that holds it and finishes with 0 wrong values;
#   3. `swapcoord verify CATALOG` at 4 ranks in the same namespaces passes; after one byte
#      of a slab in node-1's private directory is flipped it exits 1 naming that file;
#   4. a 2-node run without --catalog-dir exits 2 naming the option (the default catalog,
#      under rank 0's root, is not reachable from another node);
#   5. a --catalog-dir that is node-local (under WORK/root: every node sees a different
#      directory there) exits 2 naming it (the start-up check that all ranks see one
#      catalog directory).
#
#   emulated_nodes.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
# Exit 0 pass, 1 fail, 77 skip (mount namespaces or bind mounts not permitted here).
# The work directory is removed at the end (SWAPCOORD_TEST_KEEP=1 keeps it on failure).
# SWAPCOORD_EMULATED_NODES_MPI_ARGS: more mpiexec flags (e.g. "--mca btl self,tcp").
set -u
if [ $# -lt 4 ]; then
  echo "usage: $0 MPIEXEC \"FLAGS\" SWAPCOORD WORKDIR" >&2
  exit 2
fi
mpiexec=$1 flags=$2 app=$3 work=$4
here=$(cd "$(dirname "$0")" && pwd)
wrapper=$here/node_namespace.sh
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
root=$work/root
shared=$work/shared
mkdir -p "$root" "$shared" "$work/node-0" "$work/node-1"
model=(--scale 0.05 --buffer-size 1M --phase-timeout 60 --node-key env:SWAPCOORD_TEST_NODE)
started=$(date +%s)
ok=1

finish() {
  if [ "$ok" = 1 ] || [ "${SWAPCOORD_TEST_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    echo "# kept $work"
  fi
}
trap finish EXIT

fail() {
  ok=0
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -s "$f" ] || continue
    echo "--- $f (tail)"
    tail -15 "$f"
  done
  exit 1
}

# --- can this machine do it? (unshare -m and a bind mount inside) ------------------------
command -v unshare >/dev/null || { echo "SKIP: no 'unshare' (util-linux)"; exit 77; }
mkdir -p "$work/probe-src" "$work/probe-dst"
touch "$work/probe-src/seen"
# shellcheck disable=SC2016  # $1, $2 are the inner shell's
if ! msg=$(unshare -m --propagation private -- /bin/sh -c \
           'mount --bind "$1" "$2" && test -e "$2/seen"' probe "$work/probe-src" "$work/probe-dst" 2>&1); then
  echo "SKIP: cannot make a private mount namespace with a bind mount here" \
       "(unshare -m --propagation private; mount --bind): ${msg:-no message} (needs root or CAP_SYS_ADMIN)"
  exit 77
fi
[ -e "$work/probe-dst/seen" ] && fail "a bind mount made in a private mount namespace is visible outside it"
rm -rf "$work/probe-src" "$work/probe-dst"

# mpirun NP ARGS...: every rank through the namespace wrapper, 2 ranks per node; a hung job
# is ended after 120 s.
mpirun() {
  local np=$1
  shift
  # shellcheck disable=SC2086
  timeout -k 10 120 "$mpiexec" -n "$np" $flags ${SWAPCOORD_EMULATED_NODES_MPI_ARGS:-} \
    "$wrapper" "$work" 2 "$app" "$@"
}
# The epoch of a catalog, from `swapcoord inspect --json` (its top-level "epoch" key).
catalog_epoch() {
  "$app" inspect --json "$1" 2>/dev/null | sed -n 's/^  "epoch": \([0-9][0-9]*\),\{0,1\}$/\1/p'
}
# check_node_files JOB: node-0 holds files of ranks 0 and 1 only, node-1 of ranks 2 and 3
# only, each rank has its slab files, no catalog in a node's directory, real root empty.
check_node_files() {
  local job=$1 n r f want other
  for n in 0 1; do
    for r in 0 1 2 3; do
      f=$(find "$work/node-$n" -path "*/rank-$r/*" -type f | head -1)
      if [ $((r / 2)) = "$n" ]; then
        [ -f "$work/node-$n/$job/rank-$r/slot-0.swp" ] ||
          fail "job $job: no $work/node-$n/$job/rank-$r/slot-0.swp (rank $r is on node $n)"
      elif [ -n "$f" ]; then
        fail "job $job: node $n's private directory holds '$f' of rank $r (a rank of another node)"
      fi
    done
    other=$(find "$work/node-$n" -type f ! -path "*/rank-[0-3]/*" ! -name .swapcoord.lock | head -1)
    [ -z "$other" ] || fail "job $job: node $n's private directory holds '$other' (only rank files and the job lock expected)"
    [ -f "$work/node-$n/$job/.swapcoord.lock" ] || fail "job $job: node $n has no job lock '$work/node-$n/$job/.swapcoord.lock'"
  done
  want=$(ls -A "$root")
  [ -z "$want" ] || fail "job $job: the real '$root' is not empty (leaked past the namespaces): $want"
}

echo "# emulated_nodes: 2 nodes x 2 ranks, each node's root its own directory bound on $root" \
     "in a private mount namespace; catalogs in $shared; $("$mpiexec" --version 2>&1 | head -1)"

# --- 1. a run: data on its node only, catalog in the shared directory ---------------------
t0=$(date +%s)
job=nodes cat_dir=$shared/nodes
mpirun 4 run --roots "$root" --job $job --catalog-dir "$cat_dir" "${model[@]}" --steps 2 \
  --json "$work/run.json" >"$work/run.out" 2>"$work/run.err"
rc=$?
[ "$rc" = 0 ] || fail "the 2-node run exited $rc"
grep -q '^# Wrong values: 0 OK' "$work/run.out" || fail "the 2-node run: no '# Wrong values: 0 OK' line"
grep -Eq '"node_count": 2[,}]?$' "$work/run.json" || fail "run.json: node_count is not 2"
grep -Eq '"world_size": 4[,}]?$' "$work/run.json" || fail "run.json: world_size is not 4"
[ -f "$cat_dir/catalog.h5" ] || fail "no catalog '$cat_dir/catalog.h5' after the run"
check_node_files $job
echo "1. run: exit 0, 0 wrong values, 2 nodes; node-0 holds ranks 0-1 only, node-1 ranks 2-3 only;" \
     "$root empty; catalog in $cat_dir ($(($(date +%s) - t0)) s)"

# --- 2. crash before the commit of epoch 2 on rank 3, then --resume ----------------------
t0=$(date +%s)
job=crash cat_dir=$shared/crash catalog=$shared/crash/catalog.h5
mpirun 4 run --roots "$root" --job $job --catalog-dir "$cat_dir" "${model[@]}" --steps 2 \
  --crash-at commit --crash-epoch 2 --crash-rank 3 >"$work/crash.out" 2>"$work/crash.err"
rc=$?
crash_rc=$rc
[ "$rc" != 0 ] || fail "the run with --crash-at commit --crash-epoch 2 --crash-rank 3 exited 0"
grep -q '^rank 3@[^:]*: --crash-at commit: killing this process in epoch 2$' "$work/crash.err" ||
  fail "rank 3 did not report dying at commit in epoch 2 (exit code $rc)"
seen=$(catalog_epoch "$catalog")
[ "$seen" = 1 ] || fail "after the crash, inspect --json '$catalog' says epoch '$seen', expected 1"
mpirun 4 run --roots "$root" --job $job --catalog-dir "$cat_dir" "${model[@]}" --steps 3 --resume \
  >"$work/resume.out" 2>"$work/resume.err"
rc=$?
[ "$rc" = 0 ] || fail "--resume after the crash exited $rc"
grep -q "^# resume: epoch 1 from $catalog " "$work/resume.out" ||
  fail "--resume: no '# resume: epoch 1 from $catalog' line"
grep -q '^# Wrong values: 0 OK' "$work/resume.out" || fail "--resume: no '# Wrong values: 0 OK' line"
seen=$(catalog_epoch "$catalog")
[ "$seen" = 3 ] || fail "after --resume, the catalog says epoch '$seen', expected 3"
check_node_files $job
echo "2. crash (rank 3, commit of epoch 2): exit $crash_rc, catalog at epoch 1; --resume: 0 wrong values," \
     "catalog at epoch 3 ($(($(date +%s) - t0)) s)"

# --- 3. verify in the same namespaces, good and with one flipped byte ---------------------
t0=$(date +%s)
verify_args=()
# If verify groups ranks into nodes itself, tell it how (as the run was told).
"$app" verify --help 2>/dev/null | grep -q -- '--node-key' && verify_args=(--node-key env:SWAPCOORD_TEST_NODE)
mpirun 4 verify "$catalog" "${verify_args[@]}" >"$work/verify.out" 2>"$work/verify.err"
rc=$?
[ "$rc" = 0 ] || fail "verify at 4 ranks in the nodes' namespaces: exit code $rc, expected 0"
grep -q '^# Checked [0-9]* pieces (.*) in .* s: 0 mismatches OK' "$work/verify.out" ||
  fail "verify did not report 0 mismatches"
# The committed epoch's slot (from the catalog); byte 0 of rank 2's slab there is its first piece.
slot=$("$app" inspect --json "$catalog" 2>/dev/null | sed -n 's/^  "slot": \([0-9][0-9]*\),\{0,1\}$/\1/p')
[ -n "$slot" ] || fail "inspect --json '$catalog' gives no slot"
slab=$job/rank-2/slot-$slot.swp
"$here/flip_byte.sh" "$work/node-1/$slab" 0 >/dev/null || fail "could not damage '$work/node-1/$slab'"
mpirun 4 verify "$catalog" "${verify_args[@]}" >"$work/verify-bad.out" 2>"$work/verify-bad.err"
rc=$?
[ "$rc" = 1 ] || fail "verify after a flipped byte in node 1's '$slab': exit code $rc, expected 1"
grep -q "^# mismatch (rank [23]): tensor '[^']\{1,\}' shard [0-9]* ([0-9]* bytes at offset 0 of '$root/$slab'): checksum" \
  "$work/verify-bad.out" || fail "verify: no mismatch line naming offset 0 of '$root/$slab', read by rank 2 or 3"
grep -q '^# Checked [0-9]* pieces (.*) in .* s: 1 mismatches ERROR' "$work/verify-bad.out" ||
  fail "verify should report exactly 1 mismatch"
echo "3. verify at 4 ranks: 0 mismatches; after flipping byte 0 of node 1's $slab: exit 1," \
     "$(grep -c '^# mismatch' "$work/verify-bad.out") mismatch naming '$root/$slab' ($(($(date +%s) - t0)) s)"

# --- 4. two nodes without --catalog-dir: a clear error ------------------------------------
t0=$(date +%s)
mpirun 4 run --roots "$root" --job nocat "${model[@]}" --steps 1 >"$work/nocat.out" 2>"$work/nocat.err"
rc=$?
[ "$rc" = 2 ] || fail "a 2-node run without --catalog-dir exited $rc, expected 2"
grep -Eq -- 'catalog[-_]dir' "$work/nocat.err" || fail "a 2-node run without --catalog-dir: stderr names neither --catalog-dir nor catalog_dir"
for n in 0 1; do
  [ ! -e "$work/node-$n/nocat/catalog.h5" ] || fail "a 2-node run without --catalog-dir left a catalog in node $n's root"
done
echo "4. no --catalog-dir on 2 nodes: exit 2: $(grep -E -m1 -- 'catalog[-_]dir' "$work/nocat.err")" \
     "($(($(date +%s) - t0)) s)"

# --- 5. a catalog directory that is node-local: ranks see different directories -----------
t0=$(date +%s)
mpirun 4 run --roots "$root" --job local --catalog-dir "$root/catalog" "${model[@]}" --steps 1 \
  >"$work/local.out" 2>"$work/local.err"
rc=$?
[ "$rc" = 2 ] || fail "--catalog-dir on a node-local path exited $rc, expected 2"
grep -q -- "$root/catalog" "$work/local.err" || fail "--catalog-dir on a node-local path: stderr does not name '$root/catalog'"
echo "5. --catalog-dir $root/catalog (node-local): exit 2: $(grep -m1 -- "$root/catalog" "$work/local.err")" \
     "($(($(date +%s) - t0)) s)"

[ -z "$(ls -A "$root")" ] || fail "the real '$root' is not empty at the end: $(ls -A "$root")"
if grep -qs " $root " /proc/self/mounts; then fail "'$root' is still a mount point outside the namespaces"; fi
echo "PASS: emulated nodes in $(($(date +%s) - started)) s"
