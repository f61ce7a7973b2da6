#!/usr/bin/env bash
# Durability beyond SIGKILL: records the durability calls of a real 2-rank run (strace -f
# -y: openat, mkdir, fsync, fdatasync, rename) and checks with durability_check.py that
# every swap file and every directory on its path is durable before each catalog rename,
# and the catalog's directory after it. Needs strace (skipped, exit 77, without it).
#   durability.sh MPIEXEC "FLAGS" SWAPCOORD WORKDIR
set -u
mpiexec=$1 flags=$2 app=$3 work=$4
here=$(cd "$(dirname "$0")" && pwd)
command -v strace >/dev/null || { echo "SKIP: strace not found"; exit 77; }
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
# The roots and the catalog directory do not exist yet: the job makes them (and must make
# each durable in its parent).
# shellcheck disable=SC2086
strace -f -qq -y -o "$work/trace" -e trace=openat,mkdir,mkdirat,fsync,fdatasync,rename,renameat,renameat2 \
  "$mpiexec" -n 2 $flags "$app" run --roots "$work/nvme0/swap,$work/nvme1/swap" --catalog-dir "$work/shared/catalog" \
  --job durable --scale 0.02 --steps 2 --buffer-size 1M --layout file-per-tensor >"$work/out" 2>"$work/err"
rc=$?
if [ $rc != 0 ]; then echo "FAIL: the run exited $rc"; tail -n 20 "$work/out" "$work/err"; exit 1; fi
if ! /usr/bin/python3 "$here/durability_check.py" "$work/trace" "$work"; then
  echo "(trace kept in $work/trace)"; exit 1
fi
[ -n "${KEEP_TRACE:-}" ] || rm -rf "$work"
echo PASS
