#!/usr/bin/env bash
# A rank that stops (STOP: SIGSTOP, alive but never arriving) must end the job within the
# phase deadline, with a message naming the phase, the epoch and the ranks that did
# arrive. A rank that dies (KILL: SIGKILL) must end the job too, within the same time.
# Rank 0, which collects each phase, may be the one stopped: the others must then name it,
# within the same deadline.
#   stalled_rank.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR STOP|KILL [VICTIM_RANK (default 2)]
set -u
mpiexec=$1 flags=$2 app=$3 work=$4 mode=${5:-STOP} victim_rank=${6:-2}
rm -rf "$work" && mkdir -p "$work/root"
timeout_s=3
# shellcheck disable=SC2086
"$mpiexec" -n 4 $flags "$app" run --roots "$work/root" --job stalled --scale 0.05 --steps 100000 \
  --buffer-size 1M --phase-timeout $timeout_s >"$work/out" 2>"$work/err" &
launcher=$!
# Wait for the first table row, then stop the victim.
for _ in $(seq 1 200); do
  grep -q 'swap-out' "$work/out" 2>/dev/null && break
  sleep 0.1
done
victim=""
for pid in $(pgrep -f -- "--roots $work/root --job stalled"); do  # this job's, not another test's
  if tr '\0' '\n' </proc/"$pid"/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim_rank"; then victim=$pid; fi
done
if [ -z "$victim" ]; then
  echo "could not find rank $victim_rank's process"; kill -9 "$launcher"; cat "$work/out" "$work/err"; exit 1
fi
stopped_at=$(date +%s%N)
kill -"$mode" "$victim"
# The job must end by itself within the deadline (rank 0: timeout; plus start-up slack).
ended=0
for _ in $(seq 1 600); do
  if ! kill -0 "$launcher" 2>/dev/null; then ended=1; break; fi
  sleep 0.1
done
elapsed_ms=$(( ($(date +%s%N) - stopped_at) / 1000000 ))
kill -CONT "$victim" 2>/dev/null; kill -9 "$victim" 2>/dev/null
if [ "$ended" != 1 ]; then
  # Do not wait forever for a job that did not end: kill all of it, then report.
  kill -9 "$launcher" 2>/dev/null
  pkill -9 -f -- "--roots $work/root --job stalled" 2>/dev/null
fi
wait "$launcher"; rc=$?
echo "--- stdout (tail)"; tail -5 "$work/out"; echo "--- stderr"; cat "$work/err"
echo "exit code $rc, ${elapsed_ms} ms after rank $victim_rank got SIG$mode"
if [ "$ended" != 1 ]; then echo "FAIL: the job did not end within 60 s"; exit 1; fi
if [ "$rc" = 0 ]; then echo "FAIL: exit code 0"; exit 1; fi
# Every rank waits at most the timeout (+ 2 s for rank 0's answer); the rest is MPI_Abort
# tearing the job down.
if [ "$elapsed_ms" -gt $(( (timeout_s + 10) * 1000 )) ]; then
  echo "FAIL: the job took ${elapsed_ms} ms to end, more than the ${timeout_s} s deadline + 10 s"; exit 1
fi
if [ "$mode" = STOP ]; then
  # The message names the phase and the stopped rank, whichever it is and wherever it
  # stopped (in a phase, or inside the commit).
  if [ "$victim_rank" = 0 ]; then
    # Stopped before it arrived in the phase, or after (then it never answers).
    named="did not end within $timeout_s s: rank 0(, which collects the phase, did not arrive| arrived but did not answer within 2 s)"
  else
    named="did not end within $timeout_s s( \\(rank [0-9]+ gave up waiting\\))?: ranks [0-9,-]+ arrived, ranks $victim_rank did not"
  fi
  grep -qE "$named" "$work/err" || { echo "FAIL: no message naming the phase and rank $victim_rank ($named)"; exit 1; }
fi
rm -rf "$work"
echo "PASS"
