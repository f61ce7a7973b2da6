#!/usr/bin/env bash
# A job that does not fit its disk: on a 64 MiB ext4 file system (a loop-mounted image), a
# model whose one slot fits but whose two slots do not. With --slots 2, `swapcoord run`
# must refuse to start (exit code 2) naming the root and the bytes the plan needs, and
# leave no swap file behind; with --slots 1 the same model runs and verifies there. (A
# disk that fills up during a swap-out: io.Backends/DiskFullWrite; during the catalog
# commit: run.catalog_enospc.)
# Needs root and loop devices: without them it prints why and exits 77 (ctest: skipped).
#   enospc.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
set -u
mpiexec=$1 flags=$2 app=$3 work=$4
job=enospc

# shellcheck source=loop_fs.sh
. "$(dirname "$0")/loop_fs.sh"
loop_fs 64M "$work/mnt"
keep=1  # until the end: the work dir keeps the logs of a failure

fail() {
  echo "FAIL: $*"
  for f in "$work"/run.out "$work"/run.err "$work"/verify.out "$work"/verify.err; do
    [ -f "$f" ] && { echo "--- $f"; tail -25 "$f"; }
  done
  exit 1
}

# Four f32 tensors holding 60% of the free space together: one slot fits, two do not.
avail=$(df -B1 --output=avail "$mnt" | tail -1 | tr -d ' ')
blocks=$((avail * 6 / 10 / 4 / 4096))  # per tensor: 15% of the space, in 4 KiB blocks
elements=$((blocks * 1024))
printf '{"tensors": [\n' >"$work/tensors.json"
for i in 0 1 2 3; do
  printf '  {"name": "w%d", "shape": [%d], "dtype": "f32"}%s\n' "$i" "$elements" "$([ $i = 3 ] || echo ,)"
done >>"$work/tensors.json"
printf ']}\n' >>"$work/tensors.json"
slot_bytes=$((4 * 4 * elements))
echo "file system: $avail bytes free; model: 4 x $elements f32 = $slot_bytes bytes per slot"
if [ $((slot_bytes + 4 * 1024 * 1024)) -ge "$avail" ] || [ $((2 * slot_bytes)) -le "$avail" ]; then
  fail "cannot size the model for $avail free bytes"
fi

# Two slots do not fit: the job is refused before it makes any file, with the figures.
# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 1 $flags "$app" run --roots "$mnt" --job $job --tensors "$work/tensors.json" \
  --swap params --slots 2 --steps 2 --buffer-size 1M --phase-timeout 60 >"$work/run.out" 2>"$work/run.err"
rc=$?
echo "--- run (2 slots): exit code $rc; stderr"
cat "$work/run.err"
[ "$rc" = 2 ] || fail "exit code $rc, expected 2 (the job does not fit)"
grep -q "the job does not fit" "$work/run.err" || fail "stderr does not say that the job does not fit"
grep -q -F "swap root '$mnt'" "$work/run.err" || fail "the message does not name the swap root '$mnt'"
need=$(sed -n 's/.*GiB (\([0-9]*\) bytes, 2 slots).*/\1/p' "$work/run.err")
[ -n "$need" ] && [ "$need" -ge $((2 * slot_bytes)) ] ||
  fail "the message does not give the bytes the plan needs (at least $((2 * slot_bytes)), read '$need')"
left=$(find "$mnt" -name '*.swp' | head -1)
[ -z "$left" ] || fail "the refused job left '$left' behind"

# One slot fits: the job runs, commits and verifies on the same file system.
# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 1 $flags "$app" run --roots "$mnt" --job $job --tensors "$work/tensors.json" \
  --swap params --slots 1 --steps 2 --buffer-size 1M --phase-timeout 60 >"$work/run.out" 2>"$work/run.err"
rc=$?
echo "--- run (1 slot): exit code $rc; stdout (tail)"
tail -4 "$work/run.out"
cat "$work/run.err"
[ "$rc" = 0 ] || fail "exit code $rc with one slot, expected 0"
catalog="$mnt/$job/catalog.h5"
# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 1 $flags "$app" verify "$catalog" >"$work/verify.out" 2>"$work/verify.err"
rc=$?
cat "$work/verify.out"
[ "$rc" = 0 ] || fail "verify: exit code $rc, expected 0"
grep -q "0 mismatches OK" "$work/verify.out" || fail "verify does not say '0 mismatches OK'"
keep=0
echo "PASS"
