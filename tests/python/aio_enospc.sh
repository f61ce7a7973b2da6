#!/usr/bin/env bash
# AioHandle on a full disk: a loop-mounted 8 MiB ext4. A write that does not fit raises
# swapcoord.IoError with errno ENOSPC, naming the file and the offset; the bytes written
# before it read back intact. Usage: aio_enospc.sh PYTHON WORKDIR
set -euo pipefail
python=$1 work=$2
source "$(dirname "$0")/../mpi/run/loop_fs.sh"
"$python" -c 'import torch' 2>/dev/null || skip "$python cannot import torch"
loop_fs 8M "$work/mnt"
"$python" - "$mnt" <<'PY'
import errno, os, sys, torch, swapcoord
path = os.path.join(sys.argv[1], "big.bin")
h = swapcoord.AioHandle(1 << 20, 16, False, True, 1)
chunk = h.new_cpu_locked_tensor(1 << 20, torch.empty(0, dtype=torch.uint8))
written = 0
try:
    for i in range(64):
        chunk.fill_(i % 251)
        h.sync_pwrite(chunk, path, i << 20)
        written += 1
    sys.exit("FAIL: 64 MiB fitted on an 8 MiB file system")
except swapcoord.IoError as e:
    print(f"raised after {written} MiB: errno {e.errno}, path {e.path}, offset {e.offset}: {e}")
    assert e.errno == errno.ENOSPC, e.errno
    assert e.path == path and path in str(e), (e.path, str(e))
    assert e.offset is not None and e.offset >= written << 20, e.offset
back = torch.empty(1 << 20, dtype=torch.uint8)
for i in range(written):
    h.sync_pread(back, path, i << 20)
    assert bool((back == i % 251).all()), f"MiB {i} changed"
print(f"PASS: the {written} MiB written before the full disk read back intact")
PY
