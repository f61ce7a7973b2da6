#!/usr/bin/env bash
# Two `swapcoord` binaries side by side on the same job, alternating, for several rounds:
#   bench/run_compare.sh --a BIN_A --b BIN_B [--rounds 5] [--ranks 2] [--dir DIR] [-- run args...]
# (e.g. BIN_A = a build of an older commit, BIN_B = build/release/bin/swapcoord). Each
# round runs A then B (B then A in odd rounds, so that neither always runs on a warm page
# cache) with the same arguments (default: gpt-125m at scale 1, both, 3 steps, 64 MiB
# staging buffers). From each job's JSON it takes, per kind of phase, the slowest rank's
# seconds summed over the job's phases (swap-out, commit, swap-in) and their total; it
# prints every round, the medians and the ratio B / A of the medians (< 1: B is faster).
# Needs /usr/bin/python3 (Debian's) for the JSON.
set -euo pipefail
a="" b="" rounds=5 ranks=2 dir=${TMPDIR:-/tmp}
args=(--preset gpt-125m --scale 1 --swap both --steps 3 --buffer-size 64M)
while [ $# -gt 0 ]; do
  case "$1" in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --) shift; args=("$@"); break ;;
    *) echo "run_compare.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$a" ] && [ -x "$b" ] || { echo "run_compare.sh: --a and --b must name swapcoord executables" >&2; exit 2; }
work=$(mktemp -d "$dir/run-compare-XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
flags=()
mpirun --version 2>/dev/null | grep -q 'Open MPI' && flags+=(--oversubscribe)
one() {  # one job: NAME BIN ROUND
  local out="$work/$1-$3"
  rm -rf "$work/root"
  mkdir -p "$work/root"
  mpirun -np "$ranks" "${flags[@]}" "$2" run --roots "$work/root" --json "$out.json" "${args[@]}" >"$out.out" 2>&1 ||
    { echo "run_compare.sh: $2 failed:" >&2; tail -20 "$out.out" >&2; exit 1; }
}
for ((r = 0; r < rounds; ++r)); do
  if ((r % 2 == 0)); then one a "$a" "$r"; one b "$b" "$r"; else one b "$b" "$r"; one a "$a" "$r"; fi
done
rm -rf "$work/root"
/usr/bin/python3 - "$work" "$rounds" "$a" "$b" <<'EOF'
import json, statistics, sys
work, rounds, bins = sys.argv[1], int(sys.argv[2]), {"a": sys.argv[3], "b": sys.argv[4]}
kinds = ["swap-out", "commit", "swap-in"]
def figures(path):
    doc = json.load(open(path))
    if doc.get("wrong", 0) != 0:
        sys.exit(f"{path}: {doc['wrong']} wrong values")
    out = {k: sum(p["seconds_max"] for p in doc["phases"] if p["phase"] == k) for k in kinds}
    out["total"] = sum(out[k] for k in kinds)
    out["bytes"] = sum(p["bytes"] for p in doc["phases"] if p["phase"] == "swap-out")
    return out
rows = {n: [figures(f"{work}/{n}-{r}.json") for r in range(rounds)] for n in "ab"}
cols = kinds + ["total"]
print("# A: " + bins["a"]); print("# B: " + bins["b"])
print(f"# {'round':>5} {'bin':>3} " + " ".join(f"{c + '(s)':>12}" for c in cols))
for r in range(rounds):
    for n in "ab":
        print(f"  {r:5d} {n.upper():>3} " + " ".join(f"{rows[n][r][c]:12.3f}" for c in cols))
med = {n: {c: statistics.median(x[c] for x in rows[n]) for c in cols} for n in "ab"}
for n in "ab":
    print(f"# median {n.upper()}  " + " ".join(f"{med[n][c]:12.3f}" for c in cols))
print("# ratio B/A " + " ".join(f"{med['b'][c] / med['a'][c] if med['a'][c] else float('nan'):12.3f}" for c in cols))
gb = rows["a"][0]["bytes"] / 1e9
print(f"# swap-out+commit+swap-in of {gb:.2f} GB per job; B/A < 1 means B is faster")
EOF
