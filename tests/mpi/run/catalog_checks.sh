#!/usr/bin/env bash
# `swapcoord verify` and `swapcoord inspect` on the catalog of a real job (2 ranks, 2 steps),
# good and damaged, as a user would run them.
#   catalog_checks.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR CASE [NP]
# CASE:
#   verify-good       `mpiexec -n NP swapcoord verify` exits 0: every piece checked, 0 mismatches
#   verify-corrupted  one data byte flipped in a slab: exit 1, a mismatch naming the tensor,
#                     its shard and the damaged file
#   inspect-truncated catalog.h5 cut short: inspect (and run --resume) exit 2 with one
#                     message naming the catalog
#   inspect-random    a file of random bytes: inspect exits 2 with a message naming it
set -u
mpiexec=$1 flags=$2 app=$3 work=$4 case=$5 np=${6:-2}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work" && mkdir -p "$work/root" && work=$(cd "$work" && pwd)
catalog="$work/root/swapcoord/catalog.h5"
small=(--scale 0.05 --buffer-size 1M --phase-timeout 60)

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }
  done
  exit 1
}
mpirun() {
  local n=$1
  shift
  # shellcheck disable=SC2086
  timeout -k 10 120 "$mpiexec" -n "$n" $flags "$app" "$@"
}

mpirun 2 run --roots "$work/root" "${small[@]}" --steps 2 >"$work/job.out" 2>"$work/job.err" ||
  fail "the job that writes the catalog failed"
[ -f "$catalog" ] || fail "no catalog '$catalog' after the job"
pieces=$("$app" inspect --json "$catalog" | sed -n 's/^  "pieces": \([0-9]*\),$/\1/p')
if [ -z "$pieces" ] || [ "$pieces" -eq 0 ]; then fail "inspect --json gives no piece count"; fi

case $case in
  verify-good)
    mpirun "$np" verify "$catalog" >"$work/verify.out" 2>"$work/verify.err"
    rc=$?
    cat "$work/verify.out"
    [ "$rc" = 0 ] || fail "verify at $np ranks: exit code $rc, expected 0"
    grep -q "^# checked by $np ranks" "$work/verify.out" || fail "verify does not say it ran on $np ranks"
    grep -q "^# Checked $pieces pieces (.*) in .* s: 0 mismatches OK" "$work/verify.out" ||
      fail "verify did not check all $pieces pieces with 0 mismatches"
    ;;
  verify-corrupted)
    slab="$work/root/swapcoord/rank-0/slot-0.swp"  # epoch 2 is in slot 0
    "$here/flip_byte.sh" "$slab" 0 || fail "could not damage '$slab'"
    mpirun "$np" verify "$catalog" >"$work/verify.out" 2>"$work/verify.err"
    rc=$?
    cat "$work/verify.out"
    [ "$rc" = 1 ] || fail "verify of a damaged slab: exit code $rc, expected 1"
    grep -q "^# mismatch (rank [0-9]*): tensor '[^']\{1,\}' shard [0-9]* ([0-9]* bytes at offset 0 of '$slab'): checksum [0-9a-f]*, catalog says [0-9a-f]*" \
      "$work/verify.out" || fail "no mismatch line naming the tensor at offset 0 of '$slab'"
    grep -q "^# Checked $pieces pieces (.*) in .* s: 1 mismatches ERROR" "$work/verify.out" ||
      fail "verify should report exactly 1 mismatch of $pieces pieces"
    ;;
  inspect-truncated)
    truncate -s 3000 "$catalog"
    "$app" inspect "$catalog" >"$work/inspect.out" 2>"$work/inspect.err"
    rc=$?
    cat "$work/inspect.err"
    [ "$rc" = 2 ] || fail "inspect of a truncated catalog: exit code $rc, expected 2"
    grep -q "catalog '$catalog'" "$work/inspect.err" || fail "inspect's message does not name '$catalog'"
    "$app" inspect --json "$catalog" >"$work/inspect-json.out" 2>"$work/inspect-json.err"
    rc=$?
    [ "$rc" = 2 ] || fail "inspect --json of a truncated catalog: exit code $rc, expected 2"
    [ -s "$work/inspect-json.out" ] && fail "inspect --json of a truncated catalog printed something on stdout"
    mpirun 2 run --roots "$work/root" "${small[@]}" --steps 3 --resume >"$work/resume.out" 2>"$work/resume.err"
    rc=$?
    [ "$rc" = 2 ] || fail "run --resume from a truncated catalog: exit code $rc, expected 2"
    seen=$(grep -c "catalog '$catalog'" "$work/resume.err")
    [ "$seen" = 1 ] || fail "run --resume from a truncated catalog: '$catalog' named $seen times, expected once"
    ;;
  inspect-random)
    junk="$work/root/swapcoord/junk.h5"
    head -c 65536 /dev/urandom >"$junk"
    "$app" inspect "$junk" >"$work/inspect.out" 2>"$work/inspect.err"
    rc=$?
    cat "$work/inspect.err"
    [ "$rc" = 2 ] || fail "inspect of random bytes: exit code $rc, expected 2"
    grep -q "catalog '$junk'" "$work/inspect.err" || fail "inspect's message does not name '$junk'"
    ;;
  *)
    echo "unknown case '$case'"
    exit 2
    ;;
esac
rm -rf "$work"
echo "PASS"
