#!/bin/bash
# swapcoord tune, then a run with the config it wrote: the printed section is usable as is.
#   tune_then_run.sh SWAPCOORD MPIEXEC WORKDIR
set -euo pipefail
app=$1 mpiexec=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
"$app" tune --dir "$work" --size 8M --backend all --block-size 64k,1M --queue-depth 4,16 --threads 1,2 --iters 1 \
  --write-config "$work/tuned.json" --json "$work/tune.json" | tee "$work/out.txt"
grep -q '^# Best for a swap-out (write+fdatasync) then a swap-in (read), by their total time:' "$work/out.txt"
grep -q '"aio": {' "$work/out.txt"
# The file holds the printed section, and the JSON the same best.
/usr/bin/python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
tuned = json.load(open(f"{work}/tuned.json"))
doc = json.load(open(f"{work}/tune.json"))
assert doc["tool"] == "swapcoord tune", doc["tool"]
assert doc["best"] == tuned, (doc["best"], tuned)
aio = tuned["aio"]
assert aio["backend"] in ("libaio", "io_uring", "posix"), aio
assert aio["block_size"] in (65536, 1048576) and aio["queue_depth"] in (4, 16) and aio["intra_op_parallelism"] in (1, 2), aio
assert aio.get("register", True) is True, aio  # written only for a registered (io_uring+reg) best
rows = [r for r in doc["results"] if (r["backend"], r["register"], r["block_size"], r["queue_depth"], r["threads"]) ==
        (aio["backend"], aio.get("register", False), aio["block_size"], aio["queue_depth"], aio["intra_op_parallelism"])]
assert len(rows) == 1, rows
best = 1 / rows[0]["write_sync_gbps"]["median"] + 1 / rows[0]["read_gbps"]["median"]
for r in doc["results"]:  # no other row has a smaller write+sync + read time
    assert best <= 1 / r["write_sync_gbps"]["median"] + 1 / r["read_gbps"]["median"] + 1e-12, r
print("tune: best", aio)
PY
"$mpiexec" -n 1 "$app" run --config "$work/tuned.json" --roots "$work/roots" --steps 1 --scale 0.05 --cleanup | tee "$work/run.txt"
grep -q "# aio: backend $(/usr/bin/python3 -c "import json;print(json.load(open('$work/tuned.json'))['aio']['backend'])")" "$work/run.txt"
grep -q "Wrong values: 0 OK" "$work/run.txt"
