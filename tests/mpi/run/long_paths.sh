#!/usr/bin/env bash
# Paths of 1000 bytes (the catalog's root field holds 1023): `swapcoord run` at 2 ranks with
# a swap root and a catalog directory of 1000 bytes each (nested directories under the work
# directory), then --resume from that catalog, `swapcoord verify` and `swapcoord inspect`.
# Through MPI-IO (Open MPI's ompio), any catalog path longer than about 240 bytes aborted the
# job with a buffer overflow.
#   long_paths.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
set -u
mpiexec=$1 flags=$2 app=$3 work=$4
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.err; do
    [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }
  done
  exit 1
}
mpirun() {
  # shellcheck disable=SC2086
  timeout -k 10 120 "$mpiexec" -n 2 $flags "$app" "$@"
}
# long BASE LENGTH CHAR: BASE and nested directories of CHARs (at most 200 bytes each),
# LENGTH bytes in all.
long() {
  local path=$1 length=$2 part
  while [ $((${#path} + 1)) -lt "$length" ]; do
    part=$((length - ${#path} - 1))
    [ "$part" -gt 200 ] && part=200
    [ $((length - ${#path} - 1 - part)) = 1 ] && part=$((part - 1))  # never leave 1 byte for "/x"
    path="$path/$(printf '%*s' "$part" '' | tr ' ' "$3")"
  done
  echo "$path"
}
root=$(long "$work/root" 1000 r) catalog_dir=$(long "$work/catalog" 1000 c)
[ ${#root} = 1000 ] && [ ${#catalog_dir} = 1000 ] || fail "could not build paths of 1000 bytes"
mkdir -p "$root" "$catalog_dir" || fail "cannot make the directories"
catalog="$catalog_dir/catalog.h5"
small=(--roots "$root" --catalog-dir "$catalog_dir" --scale 0.05 --buffer-size 1M --phase-timeout 60)

mpirun run "${small[@]}" --steps 2 >"$work/run.out" 2>"$work/run.err" || fail "run: exit code $?"
grep -q "# Wrong values: 0 OK" "$work/run.out" || fail "run does not say '# Wrong values: 0 OK'"
[ -f "$catalog" ] || fail "no catalog after the run"
[ "$(stat -c %a "$catalog")" = 600 ] || fail "the catalog has mode $(stat -c %a "$catalog"), expected 600"
[ -e "$catalog.tmp" ] && fail "catalog.h5.tmp was left behind"

mpirun run "${small[@]}" --steps 4 --resume >"$work/resume.out" 2>"$work/resume.err" || fail "run --resume: exit code $?"
grep -q "^# resume: epoch 2 from" "$work/resume.out" || fail "run --resume did not start from epoch 2"
grep -q "# Wrong values: 0 OK" "$work/resume.out" || fail "run --resume does not say '# Wrong values: 0 OK'"

mpirun verify "$catalog" >"$work/verify.out" 2>"$work/verify.err" || fail "verify: exit code $?"
grep -q "0 mismatches OK" "$work/verify.out" || fail "verify does not say '0 mismatches OK'"
"$app" inspect --json "$catalog" >"$work/inspect.out" 2>"$work/inspect.err" || fail "inspect: exit code $?"
grep -q '^  "epoch": 4,\{0,1\}$' "$work/inspect.out" || fail "inspect does not say epoch 4"
grep -q -F "\"$root\"" "$work/inspect.out" || fail "inspect does not show the 1000-byte root"
echo "root: ${#root} bytes, catalog directory: ${#catalog_dir} bytes"
tail -3 "$work/verify.out"
rm -rf "$work"
echo "PASS"
