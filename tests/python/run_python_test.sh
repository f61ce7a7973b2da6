#!/usr/bin/env bash
# run_python_test.sh PYTHON LAUNCHER SCRIPT [ARGS...]: runs SCRIPT with PYTHON, under
# LAUNCHER (a ;-separated mpiexec command line) or alone (LAUNCHER "-"); exits 77 (ctest:
# skipped) saying why when PYTHON lacks torch or mpi4py.
set -euo pipefail
python=$1 launcher=$2 script=$3
shift 3
if ! missing=$("$python" -c 'import torch, mpi4py' 2>&1); then
  echo "SKIP: $python cannot import torch and mpi4py (scripts/setup installs python3-torch and python3-mpi4py): $missing"
  exit 77
fi
if [ "$launcher" = - ]; then
  exec "$python" "$script" "$@"
fi
IFS=';' read -r -a cmd <<< "$launcher"
exec "${cmd[@]}" "$python" "$script" "$@"
