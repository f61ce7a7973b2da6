#!/usr/bin/env bash
# A full disk during the catalog commit. The swap roots are on the build's disk; --catalog-dir
# is on a small loop-mounted ext4 left with room for one catalog and a half: epoch 0
# commits, and the commit of epoch 1 cannot write catalog.h5.tmp beside catalog.h5.
# `swapcoord run` (2 ranks, --phase-timeout 120, so that a hang would show) must exit 2
# within seconds with one message naming the temporary file and "No space left on device";
# no catalog.h5.tmp may remain, and inspect and verify must still find epoch 0.
# The catalog's size comes from a first, identical job whose catalog directory is on the
# build's disk (paths of the same length, so the catalogs are the same size).
# Needs root and loop devices: without them it prints why and exits 77 (ctest: skipped).
#   catalog_enospc.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
set -u
mpiexec=$1 flags=$2 app=$3 work=$4
job=catenospc

# shellcheck source=loop_fs.sh
. "$(dirname "$0")/loop_fs.sh"
command -v fallocate >/dev/null || skip "fallocate not found"

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -f "$f" ] && { echo "--- $f"; tail -25 "$f"; }
  done
  exit 1
}
now() { date +%s.%N; }
run_job() {  # run_job NAME ROOT CATALOG_DIR: 2 ranks, 2 steps (commits of epochs 0, 1 and 2)
  local name=$1 root=$2 catalog=$3 start rc
  start=$(now)
  # shellcheck disable=SC2086
  timeout -k 10 300 "$mpiexec" -n 2 $flags "$app" run --roots "$root" --catalog-dir "$catalog" --job $job \
    --scale 0.05 --steps 2 --buffer-size 1M --phase-timeout 120 >"$work/$name.out" 2>"$work/$name.err"
  rc=$?
  seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  return $rc
}

# 1. The same job with its catalog on the build's disk: how large is a catalog?
mkdir -p "$work/r1" "$work/m1"
run_job probe "$work/r1" "$work/m1/cat" || { keep=1; fail "the probe job failed (exit code $?)"; }
probe_seconds=$seconds
catalog_bytes=$(stat -c %s "$work/m1/cat/catalog.h5") || fail "the probe job left no catalog"
echo "probe job: $probe_seconds s; catalog: $catalog_bytes bytes"

# 2. A small ext4 with room for 1.5 catalogs.
loop_fs 8M "$work/m2"
keep=1  # until the end: the work dir keeps the logs of a failure
mkdir -p "$mnt/cat" "$work/r2"
avail_bytes() { df -B1 --output=avail "$mnt" | tail -1 | tr -d ' '; }
target=$((catalog_bytes * 3 / 2))
fallocate -l $(($(avail_bytes) - target)) "$mnt/filler" || fail "cannot fill '$mnt'"
sync
avail=$(avail_bytes)
echo "catalog file system: $avail bytes free (aiming at $target)"
if [ "$avail" -lt "$catalog_bytes" ] || [ "$avail" -ge $((2 * catalog_bytes)) ]; then
  fail "$avail bytes free: not between one and two catalogs of $catalog_bytes bytes"
fi

# 3. The job: epoch 0 commits, the commit of epoch 1 finds the disk full.
run_job run "$work/r2" "$mnt/cat"
rc=$?
echo "--- run: exit code $rc after $seconds s (the same job with room: $probe_seconds s); stdout (tail)"
tail -6 "$work/run.out"
echo "--- stderr"
cat "$work/run.err"
tmp="$mnt/cat/catalog.h5.tmp" catalog="$mnt/cat/catalog.h5"
[ "$rc" = 2 ] || fail "exit code $rc, expected 2 (an error)"
# A hang would last the phase timeout (120 s); the failure itself takes well under a second.
awk -v s="$seconds" -v p="$probe_seconds" 'BEGIN { exit !(s < p + 20) }' ||
  fail "the job took $seconds s to fail (the same job with room: $probe_seconds s)"
grep -Eq "commit +0 " "$work/run.out" || fail "epoch 0 was not committed before the disk was full"
seen=$(grep -c "No space left on device" "$work/run.err")
[ "$seen" = 1 ] || fail "stderr says 'No space left on device' $seen times, expected once"
grep "No space left on device" "$work/run.err" | grep -q -F "'$tmp'" ||
  fail "the 'No space left on device' message does not name '$tmp'"
if [ -e "$tmp" ] || [ -L "$tmp" ]; then fail "'$tmp' was left behind"; fi
[ "$(stat -c %a "$catalog")" = 600 ] || fail "'$catalog' has mode $(stat -c %a "$catalog"), expected 600"

epoch=$("$app" inspect --json "$catalog" 2>&1 | sed -n 's/^  "epoch": \([0-9][0-9]*\),\{0,1\}$/\1/p')
[ "$epoch" = 0 ] || fail "inspect --json '$catalog' says epoch '$epoch', expected 0"
# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 2 $flags "$app" verify "$catalog" >"$work/verify.out" 2>"$work/verify.err"
rc=$?
cat "$work/verify.out"
[ "$rc" = 0 ] || fail "verify of epoch 0 after the full disk: exit code $rc, expected 0"
grep -q "0 mismatches OK" "$work/verify.out" || fail "verify does not say '0 mismatches OK'"
keep=0
echo "PASS"
