#!/usr/bin/env bash
# slurm/collect_scaling on a real sweep made without Slurm: `swapcoord run --json` under
# mpirun at 1 and 2 "nodes" (node by --node-key env:SWAPCOORD_TEST_NODE, set per app context)
# x 1 and 2 ranks per node, strong and weak (scale x sqrt(ranks), as submit_scaling.sh does),
# 2 repeats each, and a `swapcoord bench --json` per "node" as the bench ceiling; jobs.txt is
# written in submit_scaling.sh's format. Checks both CSVs, the plots and their titles, and
# the exit 2 (naming the file) on malformed input. Runs in seconds, and wherever mpirun
# does: the Slurm cluster test (slurm_cluster.sh) runs the same end to end, but skips on
# machines without Slurm.
#
# usage: collect_scaling.sh SWAPCOORD_BIN MPIEXEC
set -euo pipefail
bin=$(readlink -f "${1:?usage: collect_scaling.sh SWAPCOORD_BIN MPIEXEC}")
mpiexec=${2:?usage: collect_scaling.sh SWAPCOORD_BIN MPIEXEC}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
collect=$here/../../slurm/collect_scaling
python=/usr/bin/python3  # Debian's python3-matplotlib lives with Debian's interpreter
[ -x "$python" ] || python=$(command -v python3)
"$python" -c 'import matplotlib' 2>/dev/null || { echo "FAIL: $python has no matplotlib (scripts/setup installs python3-matplotlib)"; exit 1; }
# ctest sets these (SWAPCOORD_MPI_ENV); set here too so that the script runs by hand.
export OMPI_MCA_rmaps_base_oversubscribe=1  # 4 ranks on fewer cores
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/swapcoord-collect.XXXXXX")
trap 'rm -rf "$T"' EXIT
sweep=$T/sweep
mkdir -p "$sweep" "$T/bench"
start=$SECONDS

echo "# jobid nodes ranks_per_node queue_depth block_size mode repeat" >"$sweep/jobs.txt"
id=100
# run_point NODES RANKS_PER_NODE SCALE: one `swapcoord run --json` as job $id
run_point() {
  local n=$1 r=$2 scale=$3 ctx=() node
  for ((node = 0; node < n; node++)); do
    [ $node = 0 ] || ctx+=(:)
    ctx+=(-n "$r" env SWAPCOORD_TEST_NODE="$node" "$bin" run --preset gpt-125m --scale "$scale" --steps 1
          --buffer-size 1M --roots "$T/roots" --job "job-$id" --catalog-dir "$T/catalog-$id"
          --node-key env:SWAPCOORD_TEST_NODE --cleanup --json "$sweep/$id.json")
  done
  mkdir -p "$T/catalog-$id"
  "$mpiexec" "${ctx[@]}" >"$T/run-$id.log" 2>&1 || { cat "$T/run-$id.log"; echo "FAIL: run $id"; exit 1; }
}
echo "$id 2 1 default default bench 1" >>"$sweep/jobs.txt"
for node in node1 node2; do
  "$bin" bench --dir "$T/bench" --size 8M --iters 1 --json "$sweep/$id.bench-$node.json" >"$T/bench.log" ||
    { cat "$T/bench.log"; echo "FAIL: bench"; exit 1; }
done
for k in 1 2; do
  for mode in strong weak; do
    for n in 1 2; do
      for r in 1 2; do
        id=$((id + 1))
        scale=0.05
        [ $mode = weak ] && scale=$(awk -v p=$((n * r)) 'BEGIN { printf "%.6g", 0.05 * sqrt(p) }')
        run_point $n $r "$scale"
        echo "$id $n $r default default $mode $k" >>"$sweep/jobs.txt"
      done
    done
  done
done
echo "16 runs and 2 bench runs in $((SECONDS - start)) s"

"$python" "$collect" "$sweep" || { echo "FAIL: collect_scaling exited $?"; exit 1; }
"$python" - "$sweep" <<'PY' || { echo "FAIL: the CSVs or plots are not right"; exit 1; }
import csv, os, re, struct, sys, zlib
sweep = sys.argv[1]
rows = list(csv.DictReader(open(f"{sweep}/scaling.csv")))
want = ["job", "mode", "repeat", "nodes", "ranks", "ranks_per_node", "model", "scale", "swap",
        "policy", "backend", "block_size", "queue_depth", "threads", "bytes", "bytes_per_rank",
        "swap_out_gbps", "swap_in_gbps", "swap_out_rank_gbps", "swap_in_rank_gbps", "imbalance",
        "swap_out_imbalance", "swap_in_imbalance", "plan_imbalance", "commit_s", "wrong"]
assert list(rows[0]) == want, list(rows[0])
assert len(rows) == 16, len(rows)
got = sorted((r["mode"], int(r["nodes"]), int(r["ranks_per_node"]), int(r["repeat"])) for r in rows)
assert got == sorted((m, n, p, k) for m in ("strong", "weak") for n in (1, 2) for p in (1, 2) for k in (1, 2)), got
for r in rows:
    assert int(r["ranks"]) == int(r["nodes"]) * int(r["ranks_per_node"]), r
    assert float(r["swap_out_gbps"]) > 0 and float(r["swap_in_gbps"]) > 0 and float(r["commit_s"]) > 0, r
    assert int(r["wrong"]) == 0 and r["model"] == "gpt-125m" and r["policy"] == "balanced", r
    assert int(r["bytes_per_rank"]) == int(r["bytes"]) // int(r["ranks"]), r
strong = {int(r["bytes"]) for r in rows if r["mode"] == "strong"}
assert len(strong) == 1, f"strong points swap different totals: {strong}"
# Weak: scale x sqrt(ranks) keeps the bytes per rank near those at 1 rank (at this tiny scale
# within 30 %: dimensions rounded up to multiples of 8, 4 KiB-aligned pieces), where strong
# points' bytes per rank fall 4-fold from 1 to 4 ranks.
weak = [int(r["bytes_per_rank"]) for r in rows if r["mode"] == "weak"]
assert max(weak) <= 1.35 * min(weak), f"weak bytes per rank {min(weak)}..{max(weak)}"
print(f"scaling.csv: 16 rows; strong {strong.pop()} B total, weak {min(weak)}..{max(weak)} B per rank")

points = list(csv.DictReader(open(f"{sweep}/scaling_summary.csv")))
assert len(points) == 8, len(points)
for p in points:
    assert p["repeats"] == "2" and len(p["jobs"].split()) == 2, p
    assert p["baseline"] == "1x1" and p["bench_nodes"] == "2", p
    for f in ("swap_out_gbps", "swap_in_efficiency", "commit_s", "plan_imbalance"):
        lo, med, hi = (float(p[f"{f}_{s}"]) for s in ("min", "median", "max"))
        assert 0 < lo <= med <= hi, (f, p)
    for c in ("write", "write_sync", "read"):
        assert float(p[f"ceiling_{c}_gbps"]) > 0, p
    if p["nodes"] == "1" and p["ranks_per_node"] == "1":
        assert abs(float(p["swap_out_efficiency_median"]) - 1) < 1e-9, p
one = {p["mode"]: float(p["ceiling_read_gbps"]) for p in points if p["nodes"] == "1"}
two = {p["mode"]: float(p["ceiling_read_gbps"]) for p in points if p["nodes"] == "2"}
assert all(abs(two[m] - 2 * one[m]) < 1e-4 * two[m] for m in one), (one, two)
print("scaling_summary.csv: 8 points of 2 repeats, efficiency 1 at 1x1, ceiling of 2 nodes = 2 x 1 node")

def png_title(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    at, text = 8, {}
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + size]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            text[key.decode()] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, value = body.partition(b"\0")
            text[key.decode()] = zlib.decompress(value[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, _method, rest = rest[0], rest[1], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, value = rest.partition(b"\0")
            text[key.decode()] = (zlib.decompress(value) if flag else value).decode()
        at += 12 + size
    return text.get("Title", "")

for name in ("aggregate_vs_ranks", "aggregate_vs_nodes", "per_rank_vs_ranks", "per_rank_vs_nodes",
             "efficiency_vs_ranks", "commit_vs_ranks", "imbalance_vs_ranks"):
    path = f"{sweep}/{name}.png"
    assert os.path.getsize(path) > 10000, path
    title = png_title(path)
    for part in ("gpt-125m", "policy balanced", "block size 1MiB", "queue depth 32", "threads 1",
                 "median of 2 repeats", "strong scaling: scale 0.05,", "MB total",
                 "weak scaling: scale 0.05 x sqrt(ranks),", "MB per rank"):
        assert part in title, f"{name}.png: '{part}' not in its title '{title}'"
print("7 plots, each titled with the model, bytes and settings, e.g.:", title)
PY

# Malformed input: exit 2 and a message naming the file.
expect2() {  # expect2 WHAT DIR TEXT
  local msg rc=0
  msg=$("$python" "$collect" "$2" 2>&1) || rc=$?
  if [ $rc != 2 ] || [[ $msg != *"$3"* ]]; then echo "FAIL: collect_scaling on $1: exit $rc: $msg"; exit 1; fi
  echo "$1: exit 2: $msg"
}
bad=$T/bad
mkdir -p "$bad"
expect2 "an empty sweep" "$bad" "no *.json files"
expect2 "a missing sweep" "$T/none" "no such directory"
cp "$sweep/101.json" "$bad/"
echo '{"world_size": 2' >"$bad/9.json"
expect2 "a truncated run JSON" "$bad" "9.json: not readable JSON"
echo '{"tool": "swapcoord bench", "results": [{"backend": "libaio"}]}' >"$bad/9.json"
mv "$bad/9.json" "$bad/9.bench-node1.json"
expect2 "a bench JSON without figures" "$bad" "9.bench-node1.json: not a complete swapcoord bench JSON"
rm "$bad/9.bench-node1.json"
echo "101 1 1 default default sideways 1" >"$bad/jobs.txt"
expect2 "a bad jobs.txt" "$bad" "jobs.txt: line 1:"
# A jobs.txt from before modes and repeats (5 columns): every job strong.
echo "101 1 1 default default" >"$bad/jobs.txt"
"$python" "$collect" "$bad" --no-plots >/dev/null
grep -q '^101,strong,1,1,1,1,gpt-125m,' "$bad/scaling.csv" || { cat "$bad/scaling.csv"; echo "FAIL: a 5-column jobs.txt"; exit 1; }
echo "PASS: collect_scaling in $((SECONDS - start)) s"
