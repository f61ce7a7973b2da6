#!/bin/bash
# Runs a swapcoord command line that needs a GPU.
#   device_cli.sh gpu CMD...              where a GPU is visible: CMD must exit 0; where none
#                                         is (or the build has no CUDA): exit 77, printing why
#   device_cli.sh nogpu PATTERN CMD...    where no GPU is visible: CMD must fail (non-zero
#                                         exit, no crash) with a message matching PATTERN;
#                                         where one is: exit 77 (the gpu tests run instead)
set -u
mode=$1; shift
pattern=
if [ "$mode" = nogpu ]; then pattern=$1; shift; fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1
rc=$?
cat "$out"
no_gpu='no CUDA device is visible|built without CUDA|built without NCCL'
case $mode in
  gpu)
    if [ $rc -ne 0 ] && grep -Eq "$no_gpu" "$out"; then
      echo "skipped: $(grep -Eo "($no_gpu).*" "$out" | head -1)"
      exit 77
    fi
    exit $rc ;;
  nogpu)
    if [ $rc -eq 0 ]; then echo "skipped: a GPU is visible (the gpu tests cover this command)"; exit 77; fi
    if [ $rc -ge 128 ]; then echo "FAIL: killed by signal $((rc - 128))"; exit 1; fi
    if grep -Eq "$pattern" "$out"; then exit 0; fi
    echo "FAIL: exit $rc without a message matching: $pattern"
    exit 1 ;;
esac
echo "device_cli.sh: unknown mode '$mode'" >&2
exit 2
