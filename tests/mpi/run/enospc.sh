#!/usr/bin/env bash
# A full disk in the middle of a job: on a 64 MiB ext4 file system (a loop-mounted image),
# a model whose epoch 0 slot files (and the catalog) fit but whose slot 1, preallocated by
# the first swap-out of epoch 1, does not. `swapcoord run` must stop with exit code 2 and
# one message saying "No space left on device" and naming the file; the catalog of epoch 0
# must still verify, and inspect must still say epoch 0.
# Needs root and loop devices: without them it prints why and exits 77 (ctest: skipped).
#   enospc.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
set -u
mpiexec=$1 flags=$2 app=$3 work=$4
job=enospc

skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "not root (uid $(id -u)): cannot loop-mount a file system"
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 not found"

rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
image="$work/fs.img" mnt="$work/mnt"
mounted=0
cleanup() {
  if [ "$mounted" = 1 ]; then
    for _ in 1 2 3 4 5; do
      umount "$mnt" 2>/dev/null && { mounted=0; break; }
      sleep 1
    done
    [ "$mounted" = 1 ] && { echo "warning: could not unmount '$mnt'; detaching it lazily"; umount -l "$mnt"; }
  fi
  rm -f "$image"
  if [ "${keep:-0}" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

truncate -s 64M "$image" || skip "cannot make a 64 MiB image in '$work'"
mkfs.ext4 -q -F -m 0 "$image" >"$work/mkfs.log" 2>&1 || skip "mkfs.ext4 failed: $(cat "$work/mkfs.log")"
mkdir -p "$mnt"
if ! mount -o loop "$image" "$mnt" 2>"$work/mount.err"; then
  skip "mount -o loop failed: $(cat "$work/mount.err")"
fi
mounted=1
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

# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 1 $flags "$app" run --roots "$mnt" --job $job --tensors "$work/tensors.json" \
  --swap params --slots 2 --steps 2 --buffer-size 1M --phase-timeout 60 >"$work/run.out" 2>"$work/run.err"
rc=$?
echo "--- run: exit code $rc; stdout (tail)"
tail -6 "$work/run.out"
echo "--- stderr"
cat "$work/run.err"
slot1="$mnt/$job/rank-0/slot-1.swp"
[ "$rc" = 2 ] || fail "exit code $rc, expected 2 (an error)"
grep -Eq "commit +0 " "$work/run.out" || fail "epoch 0 was not committed before the disk was full"
seen=$(grep -c "No space left on device" "$work/run.err")
[ "$seen" = 1 ] || fail "stderr says 'No space left on device' $seen times, expected once"
grep "No space left on device" "$work/run.err" | grep -q -F "'$slot1'" ||
  fail "the 'No space left on device' message does not name '$slot1'"
grep -q "phase swap-out, epoch 1" "$work/run.err" || fail "the message does not name the phase (swap-out, epoch 1)"

catalog="$mnt/$job/catalog.h5"
epoch=$("$app" inspect --json "$catalog" 2>&1 | sed -n 's/^  "epoch": \([0-9][0-9]*\),\{0,1\}$/\1/p')
[ "$epoch" = 0 ] || fail "inspect --json '$catalog' says epoch '$epoch', expected 0"
# shellcheck disable=SC2086
timeout -k 10 120 "$mpiexec" -n 1 $flags "$app" verify "$catalog" >"$work/verify.out" 2>"$work/verify.err"
rc=$?
cat "$work/verify.out"
[ "$rc" = 0 ] || fail "verify of epoch 0 after the full disk: exit code $rc, expected 0"
grep -q "0 mismatches OK" "$work/verify.out" || fail "verify does not say '0 mismatches OK'"
keep=0
echo "PASS"
