#!/usr/bin/env bash
# A private Slurm cluster on this machine: munged, slurmctld and two slurmd ("node1" and
# "node2", both on 127.0.0.1 with their own ports, spool, pid and log files), everything
# under one temp directory. Each slurmd runs in its own mount namespace (unshare -m) where
# its node's private directory is bound on the one swap-root path both nodes are given, so
# the jobs it starts see only their node's root, as with node-local NVMe on a cluster; the
# output and catalog directories stay shared. Submits slurm/swapcoord.sbatch for 2 nodes x
# 2 tasks, checks the job's JSON, where its files and catalog went, runs a small scaling
# sweep (strong and weak, 2 repeats, the bench ceiling) and slurm/collect_scaling, then stops
# every daemon it started (by pid) and removes its files, also on failure.
#
# usage: slurm_cluster.sh SWAPCOORD_BIN
# exit: 0 pass, 1 fail, 77 skip (the daemons cannot start here, or mount namespaces are not
# permitted; the output says why).
# SWAPCOORD_SLURM_KEEP=1 keeps the temp directory for a look afterwards.
set -uo pipefail

bin=$(readlink -f "${1:?usage: slurm_cluster.sh SWAPCOORD_BIN}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
slurm_dir=$repo/slurm
[ -x "$bin" ] || { echo "FAIL: no swapcoord binary at $bin"; exit 1; }

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; show_logs; exit 1; }
for tool in munged slurmctld slurmd sbatch sinfo squeue scontrol mpirun; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed (scripts/setup installs slurm-wlm, munge)"
done
python=/usr/bin/python3  # Debian's python3-matplotlib lives with Debian's interpreter
[ -x "$python" ] || python=$(command -v python3)
"$python" -c 'import matplotlib' 2>/dev/null || fail "$python has no matplotlib (scripts/setup installs python3-matplotlib)"

# ctest sets these; set them here too so that the script runs by hand as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/swapcoord-slurm.XXXXXX")
chmod 0700 "$T"
pids=()
show_logs() {
  for f in "$T"/log/*.log; do
    [ -s "$f" ] || continue
    echo "---- tail $f"
    tail -n 25 "$f"
  done
}
cleanup() {
  local rc=$?
  # Jobs first (so that no slurmstepd outlives its slurmd), then the daemons, newest first.
  if [ -n "${SLURM_CONF:-}" ] && [ ${#pids[@]} -gt 1 ]; then
    scancel --full --quiet --user=root 2>/dev/null || true
    sleep 1
  fi
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local n=0
    while kill -0 "${pids[i]}" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
    kill -KILL "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  # slurmstepd processes of this cluster (found by our config path), if any survived.
  local p
  for p in $(pgrep -f "$T/" 2>/dev/null); do
    [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null
  done
  if [ "${SWAPCOORD_SLURM_KEEP:-0}" = 1 ]; then
    echo "kept $T"
  else
    rm -rf "$T"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
  "$python" - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

mkdir -p "$T"/{munge,state,spool,run,log,out} "$T"/tmp/node1 "$T"/tmp/node2
start=$SECONDS

# --- node-local swap roots ------------------------------------------------------------
# $T/nvme is the swap-root path of both nodes; in node N's mount namespace $T/local/N is
# bound on it. From here (outside every namespace) $T/nvme stays an empty directory, and
# $T/local/N shows what node N's jobs wrote.
mkdir -p "$T/nvme" "$T/local/node1" "$T/local/node2"
command -v unshare >/dev/null || skip "no 'unshare' (util-linux): cannot give each slurmd its own root"
# shellcheck disable=SC2016  # $1, $2 belong to the inner shell
if ! msg=$(unshare -m --propagation private -- /bin/sh -c 'mount --bind "$1" "$2"' probe \
             "$T/local/node1" "$T/nvme" 2>&1); then
  skip "cannot bind a private directory in a mount namespace (unshare -m; mount --bind; needs root or CAP_SYS_ADMIN): $msg"
fi

# --- munge: its own key, socket, pid, log and seed ---------------------------------
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$T/munge/munge.key"
sock=$T/munge/munge.socket
munged --foreground --force --socket="$sock" --key-file="$T/munge/munge.key" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" \
  --seed-file="$T/munge/munged.seed" >>"$T/log/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; kill -0 "${pids[0]}" 2>/dev/null || break; sleep 0.1; done
if [ ! -S "$sock" ]; then show_logs; skip "munged did not start (log above)"; fi

# --- slurm.conf ---------------------------------------------------------------------
ctld_port=$(free_port); p1=$(free_port); p2=$(free_port)
while [ "$p2" = "$p1" ] || [ "$p2" = "$ctld_port" ]; do p2=$(free_port); done
cpus=4
export SLURM_CONF=$T/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=swapcoordtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$p1
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd-%n.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
PlugStackConfig=$T/plugstack.conf
TmpFS=$T/tmp/%n
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$p1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
NodeName=node2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$p2 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
: >"$T/plugstack.conf"

# --- daemons -------------------------------------------------------------------------
slurmctld -D -c -i -f "$SLURM_CONF" >>"$T/log/slurmctld.out" 2>&1 &
pids+=($!)
sleep 1
# Each slurmd in its own mount namespace with $T/local/<node> bound on $T/nvme; slurmstepd
# and the tasks inherit it. exec keeps the pid (cleanup kills it by pid); the mount ends
# with the namespace's last process.
for n in node1 node2; do
  mkdir -p "$T/spool/$n"
  # shellcheck disable=SC2016  # $1.. belong to the inner shell
  unshare -m --propagation private -- /bin/sh -c \
    'mount --bind "$1" "$2" || { echo "cannot bind $1 on $2" >&2; exit 97; }; shift 2; exec "$@"' \
    slurmd-ns "$T/local/$n" "$T/nvme" slurmd -D -f "$SLURM_CONF" -N "$n" >>"$T/log/slurmd-$n.out" 2>&1 &
  pids+=($!)
done
ready=0
for _ in $(seq 120); do
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { show_logs; for f in "$T"/log/*.out; do echo "---- $f"; tail -n 20 "$f"; done; skip "a Slurm daemon exited at start (logs above)"; }
  done
  if [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$')" = 2 ]; then ready=1; break; fi
  sleep 0.5
done
if [ $ready != 1 ]; then
  sinfo -N 2>&1
  show_logs
  skip "the two slurmd never became idle in sinfo within 60 s (logs above)"
fi
# Open MPI's session directories (and anything else the jobs put in TMPDIR) under $T too;
# sbatch passes TMPDIR on to the jobs.
mkdir -p "$T/t"
export TMPDIR=$T/t
echo "cluster up in $((SECONDS - start)) s: $(sinfo -h -N -o '%N:%t' | tr '\n' ' ')"

# waits for job $1 to leave the queue (timeout $2 s); prints its final state
wait_job() {
  local id=$1 limit=$2 t0=$SECONDS state
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in
      PENDING|RUNNING|CONFIGURING|COMPLETING|"") sleep 1 ;;
      *) echo "$state"; return 0 ;;
    esac
  done
  scancel "$id" 2>/dev/null
  echo "TIMEOUT"
  return 1
}

# Debugging aid: SWAPCOORD_SLURM_SHELL='commands' runs them on the cluster instead of the test.
if [ -n "${SWAPCOORD_SLURM_SHELL:-}" ]; then
  export T
  bash -c "$SWAPCOORD_SLURM_SHELL"
  exit $?
fi

# --- the job: slurm/swapcoord.sbatch, 2 nodes x 2 tasks -------------------------------
# Both "nodes" are this host. Open MPI's shared-memory transport (vader) names its
# segments by host name, job and local rank, so ranks of node1 and node2 collide (and
# crash in mca_btl_vader_poll_handle_frag): the jobs use the tcp and self transports only.
# Ranks learn their node from SLURM_NODEID, which srun sets per task and which mpirun's
# ranks inherit from its daemons (started by srun, one per node): --node-key slurm.
export SWAPCOORD_BIN=$bin SWAPCOORD_PRESET=gpt-125m SWAPCOORD_SCALE=0.05 SWAPCOORD_STEPS=2
# One root path for both nodes, node-local through the slurmds' mount namespaces.
export SWAPCOORD_ROOTS="$T/nvme/a,$T/nvme/b"
export SWAPCOORD_EXTRA_ARGS="--buffer-size 1M --phase-timeout 60"
export SWAPCOORD_OUT=$T/out

# submit_2x2 LABEL ENV...: runs swapcoord.sbatch on 2 nodes x 2 tasks (keeping its files)
# and checks its JSON, where its data files and its catalog went
submit_2x2() {
  local label=$1; shift
  local t0=$SECONDS id state json catalog
  id=$(env SWAPCOORD_KEEP=1 "$@" sbatch --parsable -N 2 --ntasks-per-node=2 --time=10 -o "$T/out/slurm-%j.log" \
         "$slurm_dir/swapcoord.sbatch") || fail "sbatch refused the job"
  state=$(wait_job "$id" 300)
  echo "job $id ($label, 2 nodes x 2 tasks): $state in $((SECONDS - t0)) s"
  if [ "$state" != COMPLETED ]; then
    cat "$T/out/slurm-$id.log" 2>/dev/null
    fail "job $id ($label) ended $state"
  fi
  json=$T/out/$id.json
  [ -s "$json" ] || { cat "$T/out/slurm-$id.log"; fail "no $json"; }
  "$python" - "$json" <<'PY' || { cat "$T/out/slurm-$id.log"; fail "the JSON of job $id ($label) is not right"; }
import json, sys
j = json.load(open(sys.argv[1]))
bad = []
if j.get("world_size") != 4: bad.append(f"world_size {j.get('world_size')} (want 4)")
if j.get("node_count") != 2: bad.append(f"node_count {j.get('node_count')} (want 2)")
if j.get("wrong") != 0: bad.append(f"wrong {j.get('wrong')} (want 0)")
nb = j.get("plan", {}).get("node_bytes", [])
if len(nb) != 2 or not all(b > 0 for b in nb): bad.append(f"plan.node_bytes {nb} (want 2 nodes, both > 0)")
kinds = {p.get("phase") for p in j.get("phases", [])}
if not {"swap-out", "swap-in", "commit"} <= kinds: bad.append(f"phases {sorted(kinds)}")
if bad:
    print("\n".join(bad)); sys.exit(1)
print(f"  json ok: world_size 4, node_count 2, plan.node_bytes {nb}, wrong 0")
PY
  # The catalog in the shared directory (SWAPCOORD_CATALOG_DIR's default), none elsewhere.
  catalog=$T/out/catalog-$id/catalog.h5
  [ -f "$catalog" ] || { cat "$T/out/slurm-$id.log"; fail "job $id ($label): no catalog $catalog"; }
  [ -z "$(find "$T/local" -name 'catalog.h5*')" ] || fail "job $id ($label): a catalog in a node-local root: $(find "$T/local" -name 'catalog.h5*')"
  # Each node's data in its own private root, and only its own ranks' (the catalog says which
  # rank is on which node); nothing on the shared root path itself.
  "$bin" inspect --json "$catalog" >"$T/out/inspect-$id.json" || fail "job $id ($label): inspect of $catalog failed"
  "$python" - "$T/out/inspect-$id.json" "$T/local" "swapcoord-$id" <<'PY' || fail "job $id ($label): the data files are not where their nodes are"
import json, os, re, sys
doc, local, job = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
node_of = {r["rank"]: r["node"] for r in doc["ranks"]}
seen = {}  # slurm node name -> ranks whose files it holds
for name in ("node1", "node2"):
    ranks = set()
    for dirpath, _, files in os.walk(os.path.join(local, name)):
        m = re.search(r"/" + re.escape(job) + r"/rank-(\d+)$", dirpath)
        if m and any(f.endswith(".swp") for f in files):
            ranks.add(int(m.group(1)))
    seen[name] = ranks
bad = []
if seen["node1"] | seen["node2"] != set(node_of):
    bad.append(f"ranks with files {sorted(seen['node1'] | seen['node2'])}, catalog ranks {sorted(node_of)}")
if seen["node1"] & seen["node2"]:
    bad.append(f"ranks {sorted(seen['node1'] & seen['node2'])} have files on both nodes")
for name, ranks in seen.items():
    nodes = {node_of.get(r) for r in ranks}
    if len(ranks) != 2 or len(nodes) != 1:
        bad.append(f"{name}'s private root holds files of ranks {sorted(ranks)} (catalog nodes {sorted(map(str, nodes))}), want the 2 ranks of one node")
if {node_of[r] for r in seen["node1"]} == {node_of[r] for r in seen["node2"]}:
    bad.append("both private roots hold ranks of the same catalog node")
if bad:
    print("\n".join(bad)); sys.exit(1)
print(f"  files: node1's private root holds ranks {sorted(seen['node1'])}, node2's ranks {sorted(seen['node2'])}")
PY
  [ -z "$(ls -A "$T/nvme")" ] || fail "job $id ($label): the shared root path $T/nvme is not empty: $(ls -A "$T/nvme")"
  echo "  catalog in $T/out/catalog-$id; $T/nvme (the roots' path outside the nodes) empty"
  # swapcoord verify on both nodes (each piece read where its file is), as a user would.
  OMPI_MCA_btl=self,tcp timeout -k 10 120 srun --mpi=pmix -N 2 --ntasks-per-node=2 --time=5 \
    "$bin" verify "$catalog" >"$T/out/verify-$id.out" 2>&1 ||
    { cat "$T/out/verify-$id.out"; fail "job $id ($label): srun -N 2 swapcoord verify $catalog failed"; }
  grep -q '^# Checked [0-9]* pieces (.*) in .* s: 0 mismatches OK' "$T/out/verify-$id.out" ||
    { cat "$T/out/verify-$id.out"; fail "job $id ($label): verify did not report 0 mismatches"; }
  echo "  srun -N 2 --ntasks-per-node=2 swapcoord verify: $(grep '^# Checked' "$T/out/verify-$id.out" | sed 's/^# //')"
  rm -rf "$T"/local/node?/?/"swapcoord-$id" "$T/out/catalog-$id"
}
# mpirun inside the allocation (Open MPI takes hosts and slots from Slurm).
submit_2x2 mpirun SWAPCOORD_LAUNCHER=mpirun SWAPCOORD_MPIRUN_ARGS="--mca btl self,tcp"
# srun --mpi=pmix: works here because TmpFS=$T/tmp/%n gives each slurmd its own PMIx
# directories (with one TmpFS both steps make the same spmix_appdir_<uid>_<job>.<step>).
submit_2x2 srun-pmix SWAPCOORD_LAUNCHER=srun SWAPCOORD_SRUN_MPI=pmix OMPI_MCA_btl=self,tcp

# --- a scaling sweep and collect_scaling --------------------------------------------------
# Strong and weak (-m both) at 1x1, 1x2, 2x1, 2x2, each twice (-k 2), and the bench job that
# measures each node's raw ceiling: 17 jobs.
t0=$SECONDS
sweep=$T/sweep
export SWAPCOORD_STEPS=1
SWAPCOORD_LAUNCHER=mpirun SWAPCOORD_MPIRUN_ARGS="--mca btl self,tcp" SWAPCOORD_BENCH_SIZE=8M \
  "$slurm_dir/submit_scaling.sh" -m both -k 2 -n "1 2" -r "1 2" -o "$sweep" -- --time=10 --exclusive \
  >"$T/out/submit.txt" 2>&1 || { cat "$T/out/submit.txt"; fail "submit_scaling.sh failed"; }
"$python" - "$sweep/jobs.txt" <<'PY' || { cat "$sweep/jobs.txt"; fail "jobs.txt does not list the sweep's jobs"; }
import sys
jobs = [line.split() for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
got = [(f[5], int(f[1]), int(f[2]), int(f[6])) for f in jobs]
want = [("bench", 2, 1, 1)] + [(m, n, r, k) for k in (1, 2) for m in ("strong", "weak") for n in (1, 2) for r in (1, 2)]
assert got == want, got
PY
while read -r id n r _ _ mode k; do
  case "$id" in ''|\#*) continue ;; esac
  state=$(wait_job "$id" 300)
  echo "sweep job $id ($mode, $n nodes x $r ranks, repeat $k): $state"
  if [ "$state" != COMPLETED ]; then
    cat "$sweep/slurm-$id.log" 2>/dev/null
    fail "sweep job $id ended $state"
  fi
done <"$sweep/jobs.txt"
bench_id=$(awk '$6 == "bench" { print $1 }' "$sweep/jobs.txt")
for n in node1 node2; do
  [ -s "$sweep/$bench_id.bench-$n.json" ] || fail "the bench job $bench_id wrote no $sweep/$bench_id.bench-$n.json"
done
echo "sweep of 17 jobs: $((SECONDS - t0)) s"
"$python" "$slurm_dir/collect_scaling" "$sweep" || fail "collect_scaling failed"
"$python" - "$sweep" <<'PY' || { cat "$sweep/scaling.csv" "$sweep/scaling_summary.csv"; fail "the CSVs do not hold the sweep's points"; }
import csv, math, sys
sweep = sys.argv[1]
rows = list(csv.DictReader(open(f"{sweep}/scaling.csv")))
for col in ("mode", "repeat", "scale", "bytes_per_rank", "swap_out_imbalance", "plan_imbalance"):
    assert col in rows[0], f"no column {col}"
got = sorted((r["mode"], int(r["nodes"]), int(r["ranks_per_node"]), int(r["repeat"])) for r in rows)
assert got == sorted((m, n, p, k) for m in ("strong", "weak") for n in (1, 2) for p in (1, 2) for k in (1, 2)), got
for r in rows:
    assert int(r["ranks"]) == int(r["nodes"]) * int(r["ranks_per_node"]), r
    assert float(r["swap_out_gbps"]) > 0 and float(r["swap_in_gbps"]) > 0, r
    assert int(r["bytes"]) > 0 and int(r["wrong"]) == 0, r
    # strong: the model as given; weak: its scale grown with sqrt(ranks)
    want = 0.05 * (math.sqrt(int(r["ranks"])) if r["mode"] == "weak" else 1)
    assert abs(float(r["scale"]) - want) < 1e-4, (want, r)
points = list(csv.DictReader(open(f"{sweep}/scaling_summary.csv")))
assert len(points) == 8, len(points)
for p in points:
    assert p["repeats"] == "2" and p["baseline"] == "1x1" and p["bench_nodes"] == "2", p
    assert float(p["swap_out_gbps_min"]) <= float(p["swap_out_gbps_median"]) <= float(p["swap_out_gbps_max"]), p
    assert float(p["swap_in_efficiency_median"]) > 0 and float(p["commit_s_median"]) > 0, p
    assert float(p["ceiling_write_sync_gbps"]) > 0 and float(p["ceiling_read_gbps"]) > 0, p
print(f"scaling.csv: {len(rows)} rows (strong and weak, 2 repeats); scaling_summary.csv: {len(points)} points "
      "with the bench ceiling of 2 nodes")
PY
[ -z "$(ls -A "$T/nvme")" ] || fail "after the sweep, the shared root path $T/nvme is not empty: $(ls -A "$T/nvme")"
for png in aggregate_vs_ranks aggregate_vs_nodes per_rank_vs_ranks per_rank_vs_nodes efficiency_vs_ranks \
           commit_vs_ranks imbalance_vs_ranks; do
  [ -s "$sweep/$png.png" ] || fail "no plot $sweep/$png.png"
done
# A malformed sweep directory is a clear error (exit 2), not a traceback.
mkdir -p "$T/badsweep"
echo '{"world_size": 2' >"$T/badsweep/9.json"
msg=$("$python" "$slurm_dir/collect_scaling" "$T/badsweep" 2>&1); rc=$?
[ $rc = 2 ] && [[ $msg == *"9.json: not readable JSON"* ]] || fail "collect_scaling on a bad sweep: exit $rc: $msg"
msg=$("$python" "$slurm_dir/collect_scaling" "$T/nosuchsweep" 2>&1); rc=$?
[ $rc = 2 ] && [[ $msg == *"no such directory"* ]] || fail "collect_scaling on a missing dir: exit $rc: $msg"

echo "PASS: Slurm cluster test in $((SECONDS - start)) s"
