#!/usr/bin/env bash
# A rank that stops (STOP: SIGSTOP, alive but never arriving) must end the job within the
# phase deadline, with a message naming the phase, the epoch and the ranks that did
# arrive. A rank that dies (KILL: SIGKILL) must end the job too, within the same time.
#   stalled_rank.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR STOP|KILL
set -u
mpiexec=$1 flags=$2 app=$3 work=$4 mode=${5:-STOP}
rm -rf "$work" && mkdir -p "$work/root"
timeout_s=3
# shellcheck disable=SC2086
"$mpiexec" -n 4 $flags "$app" run --roots "$work/root" --job stalled --scale 0.05 --steps 100000 \
  --buffer-size 1M --phase-timeout $timeout_s >"$work/out" 2>"$work/err" &
launcher=$!
# Wait for the first table row, then stop rank 2.
for _ in $(seq 1 200); do
  grep -q 'swap-out' "$work/out" 2>/dev/null && break
  sleep 0.1
done
victim=""
for pid in $(pgrep -f -- "--job stalled"); do
  if tr '\0' '\n' </proc/"$pid"/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then victim=$pid; fi
done
if [ -z "$victim" ]; then
  echo "could not find rank 2's process"; kill -9 "$launcher"; cat "$work/out" "$work/err"; exit 1
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
  pkill -9 -f -- "--job stalled" 2>/dev/null
fi
wait "$launcher"; rc=$?
echo "--- stdout (tail)"; tail -5 "$work/out"; echo "--- stderr"; cat "$work/err"
echo "exit code $rc, ${elapsed_ms} ms after rank 2 got SIG$mode"
if [ "$ended" != 1 ]; then echo "FAIL: the job did not end within 60 s"; exit 1; fi
if [ "$rc" = 0 ]; then echo "FAIL: exit code 0"; exit 1; fi
if [ "$elapsed_ms" -gt $(( (timeout_s + 20) * 1000 )) ]; then
  echo "FAIL: the job took ${elapsed_ms} ms to end, more than the ${timeout_s} s deadline + 20 s"; exit 1
fi
if [ "$mode" = STOP ]; then
  # Stopped while the others wait in PhaseSync: rank 0 names who arrived. Stopped while
  # they are inside a collective call (the catalog write): the watchdog names the phase.
  grep -qE "did not end within $timeout_s s(: ranks 0-1,3 arrived, ranks 2 did not| \(a rank stopped responding\))" "$work/err" ||
    { echo "FAIL: no message naming the phase and the missing rank"; exit 1; }
fi
rm -rf "$work"
echo "PASS"
