#!/usr/bin/env bash
# Crash consistency and resume of `swapcoord run`, end to end at 2 ranks.
#
# For each crash point (--crash-at swap-out|sync|commit|written|renamed) x epoch (0, 1, 2)
# x rank (0 and 1; written and renamed happen on rank 0 only), one rank is SIGKILLed there.
# Then:
#   * the job must end with a non-zero exit code, the victim having said where it died;
#   * the catalog must name the last epoch whose commit was renamed into place: E - 1 for a
#     crash before the rename of epoch E's catalog, E for a crash after it (`renamed`);
#     with no committed epoch (E = 0, before the rename) there must be no catalog.h5, and
#     `run --resume` must fail with exit code 2 and one message naming the missing catalog
#     (then a fresh run over the leftovers must succeed);
#   * `swapcoord verify` of the catalog left by the crash must pass (the committed epoch
#     survived the crash byte for byte);
#   * `run --resume --steps 3` must print `# resume: epoch <expected>`, find zero wrong
#     values and exit 0, and `swapcoord verify` of its final catalog must pass.
# Then twice: the whole job (mpiexec and its ranks) is SIGKILLed at a random moment (a
# fixed seed), and the job resumes from whatever epoch the catalog names (or, with no
# catalog yet, --resume fails cleanly).
#
#   crash_resume.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
# Prints one line per case and a summary; exit code 0 when every case passed, else 1.
set -u
if [ $# -lt 4 ]; then
  echo "usage: $0 MPIEXEC \"FLAGS\" SWAPCOORD WORKDIR" >&2
  exit 2
fi
mpiexec=$1 flags=$2 app=$3 work=$4
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
model=(--scale 0.05 --buffer-size 1M --phase-timeout 20)
started=$(date +%s)
passed=0 failed=0 failures=()

# mpirun NP ARGS... (stdout and stderr go where the caller sends them); a hung job is
# ended after 90 s (SIGTERM to mpiexec, which takes its ranks down).
mpirun() {
  local np=$1
  shift
  # shellcheck disable=SC2086
  timeout -k 10 90 "$mpiexec" -n "$np" $flags "$app" "$@"
}

# The epoch of a catalog, from `swapcoord inspect --json` (its top-level "epoch" key).
catalog_epoch() {
  "$app" inspect --json "$1" 2>/dev/null | sed -n 's/^  "epoch": \([0-9][0-9]*\),\{0,1\}$/\1/p'
}

# check_resume DIR JOB EXPECTED STEPS [NP]: what must hold after a crash; sets $why on
# failure and $detail to a short description of what was seen. The resume runs at NP ranks
# (default 2, the crashed job's; another count re-partitions the committed state).
check_resume() {
  local dir=$1 job=$2 expected=$3 steps=$4 np=${5:-2}
  local catalog="$dir/root/$job/catalog.h5" rc seen
  if [ "$expected" -lt 0 ]; then
    if [ -e "$catalog" ]; then why="no epoch was committed, yet '$catalog' exists"; return 1; fi
    mpirun 2 run --roots "$dir/root" --job "$job" "${model[@]}" --steps "$steps" --resume \
      >"$dir/resume.out" 2>"$dir/resume.err"
    rc=$?
    if [ "$rc" != 2 ]; then why="--resume without a catalog: exit code $rc, expected 2"; return 1; fi
    seen=$(grep -c -F "catalog '$catalog': no such file" "$dir/resume.err")
    if [ "$seen" != 1 ]; then
      why="--resume without a catalog: stderr names '$catalog' (no such file) $seen times, expected once"
      return 1
    fi
    # The leftovers of the crash (half-written slot files, catalog.h5.tmp) do not stand
    # in the way of a fresh start.
    mpirun 2 run --roots "$dir/root" --job "$job" "${model[@]}" --steps "$steps" \
      >"$dir/fresh.out" 2>"$dir/fresh.err"
    rc=$?
    if [ "$rc" != 0 ] || ! grep -q '^# Wrong values: 0 OK' "$dir/fresh.out"; then
      why="a fresh run after the crash: exit code $rc"; return 1
    fi
    detail="no catalog: --resume exit 2 naming it; fresh run OK"
    return 0
  fi
  seen=$(catalog_epoch "$catalog")
  if [ "$seen" != "$expected" ]; then
    why="inspect --json '$catalog' says epoch '${seen}', expected $expected"; return 1
  fi
  mpirun 2 verify "$catalog" >"$dir/verify-crashed.out" 2>"$dir/verify-crashed.err"
  rc=$?
  if [ "$rc" != 0 ]; then why="verify of the catalog left by the crash: exit code $rc"; return 1; fi
  mpirun "$np" run --roots "$dir/root" --job "$job" "${model[@]}" --steps "$steps" --resume \
    >"$dir/resume.out" 2>"$dir/resume.err"
  rc=$?
  if [ "$rc" != 0 ]; then why="--resume at $np ranks: exit code $rc"; return 1; fi
  if ! grep -q "^# resume: epoch $expected from $catalog " "$dir/resume.out"; then
    why="--resume: no '# resume: epoch $expected from $catalog' line"; return 1
  fi
  if ! grep -q '^# Wrong values: 0 OK' "$dir/resume.out"; then
    why="--resume: no '# Wrong values: 0 OK' line"; return 1
  fi
  seen=$(catalog_epoch "$catalog")
  if [ "$seen" != "$steps" ]; then
    why="after the resume, the catalog says epoch '$seen', expected $steps"; return 1
  fi
  mpirun 2 verify "$catalog" >"$dir/verify.out" 2>"$dir/verify.err"
  rc=$?
  if [ "$rc" != 0 ]; then why="verify of the final catalog: exit code $rc"; return 1; fi
  if [ "$np" != 2 ] && ! grep -q "^# resume: .*re-partitioned" "$dir/resume.out"; then
    why="--resume at $np ranks: not re-partitioned"; return 1
  fi
  detail="resumed at epoch $expected on $np ranks, 0 wrong, verify OK"
  return 0
}

report() {  # report NAME DIR: counts the case and prints its line (with logs on failure)
  local name=$1 dir=$2
  if [ -z "$why" ]; then
    passed=$((passed + 1))
    printf '%-62s PASS  %s\n' "$name" "$detail"
    rm -rf "$dir"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf '%-62s FAIL  %s\n' "$name" "$why"
    for f in "$dir"/*.out "$dir"/*.err; do
      [ -f "$f" ] || continue
      echo "    --- $f (tail)"
      tail -8 "$f" | sed 's/^/    /'
    done
  fi
}

echo "# crash_resume: 2 ranks, $("$mpiexec" --version 2>&1 | head -1), work dir $work"
n=0
for point in swap-out sync commit written renamed; do
  for epoch in 0 1 2; do
    for rank in 0 1; do
      case $point in written | renamed) [ "$rank" = 0 ] || continue ;; esac
      n=$((n + 1))
      dir="$work/case-$n"
      job=crash
      mkdir -p "$dir/root"
      if [ "$point" = renamed ]; then expected=$epoch; else expected=$((epoch - 1)); fi
      name=$(printf 'crash-at %-8s epoch %d rank %d -> epoch %2d' "$point" "$epoch" "$rank" "$expected")
      why="" detail=""
      mpirun 2 run --roots "$dir/root" --job "$job" "${model[@]}" --steps 3 \
        --crash-at "$point" --crash-epoch "$epoch" --crash-rank "$rank" >"$dir/crash.out" 2>"$dir/crash.err"
      rc=$?
      if [ "$rc" = 0 ]; then
        why="the job with --crash-at exited 0"
      elif [ "$rc" = 124 ] || [ "$rc" = 137 ] && ! grep -q -- '--crash-at' "$dir/crash.err"; then
        why="the job with --crash-at hung (exit code $rc) instead of dying"
      elif ! grep -q -- "^rank $rank@[^:]*: --crash-at $point: killing this process in epoch $epoch\$" "$dir/crash.err"; then
        why="rank $rank did not report dying at $point in epoch $epoch (exit code $rc)"
      else
        check_resume "$dir" "$job" "$expected" 3 && detail="crash exit $rc; $detail"
      fi
      report "$name" "$dir"
    done
  done
done

# The whole job killed at a random moment: a longer run, so that the kill mostly lands in
# the middle of it (a run that already ended resumes at its last epoch). The first resumes
# at the same world size, the second at 3 ranks (re-partitioned, bit for bit).
RANDOM=20240611
steps=60
for i in 1 2; do
  n=$((n + 1))
  dir="$work/case-$n"
  job="crashrand-$$-$i"
  mkdir -p "$dir/root"
  delay_ms=$((RANDOM % 1001))
  delay=$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))
  why="" detail=""
  mpirun 2 run --roots "$dir/root" --job "$job" "${model[@]}" --steps $steps >"$dir/crash.out" 2>"$dir/crash.err" &
  launcher=$!
  # The random delay counts from the first commit (start-up takes seconds under load).
  for _ in $(seq 1 300); do
    grep -Eq '^ +0 +commit ' "$dir/crash.out" 2>/dev/null && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  sleep "$delay"
  pids=$(pgrep -f -- "--job $job( |\$)")
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  wait "$launcher"
  rc=$?
  # Nothing of the job may survive (the ranks go with mpiexec); wait for them to be gone.
  for _ in $(seq 1 50); do
    pgrep -f -- "--job $job( |\$)" >/dev/null || break
    sleep 0.1
  done
  left=$(pgrep -f -- "--job $job( |\$)")
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null
    why="processes of the job outlived the SIGKILL by 5 s: $left"
  fi
  catalog="$dir/root/$job/catalog.h5"
  if [ -e "$catalog" ]; then expected=$(catalog_epoch "$catalog"); else expected=-1; fi
  last=$(grep -E '^ +[0-9]+ +[a-z-]+ +[0-9]+ ' "$dir/crash.out" | tail -1 | awk '{print $2 " of epoch " $3}')
  name=$(printf 'kill -9 all at %5s s (after %-20s) -> epoch %2s' "$delay" "${last:-start-up}" "${expected:-?}")
  if [ -z "$why" ]; then
    if [ -z "$expected" ]; then
      why="inspect --json could not read the catalog '$catalog' left by the kill"
    else
      check_resume "$dir" "$job" "$expected" $steps $((i == 1 ? 2 : 3)) && detail="job exit $rc; $detail"
      [ "$rc" = 0 ] && detail="$detail (the job had ended before the kill)"
    fi
  fi
  report "$name" "$dir"
done

elapsed=$(($(date +%s) - started))
echo "# crash_resume: $n cases, $passed passed, $failed failed, ${elapsed} s"
if [ "$failed" -gt 0 ]; then
  printf '# failed: %s\n' "${failures[@]}"
  exit 1
fi
rm -rf "$work"
exit 0
