#!/usr/bin/env python3
"""Benchmarks of the Python package (run with Debian's /usr/bin/python3 and the package on
PYTHONPATH, e.g. PYTHONPATH=build/release/python):

  aio        swapcoord.AioHandle (sync_pread / sync_pwrite from Python, the path looked up per
             call) against the C++ engine (one IoEngine and one open file,
             IoEngine::run timed in C++) on the same file and buffer, interleaved, per
             transfer size, after one warm-up call of each, alternating which goes first.
             Figures: median time and GB/s of each over --repeats runs, and the median over
             the back-to-back pairs of the bandwidth ratio handle / engine.
  optimizer  an Adam step over --groups groups of --group-mib MiB of fp32 parameters with
             the state in memory (torch.optim.Adam) against the same step through
             OptimizerSwapper (state on NVMe), interleaved: median step times, their ratio,
             the per-group update and read times, and the share of read time hidden behind
             the updates (1 - time blocked on reads / read time), over all groups ("all")
             and over the reads the overlap target is about ("1..": group j+1's read where
             group j's update took at least as long as it; target 80 %). Group 0's read has
             nothing to hide behind here (a training loop calls begin_step() first).

Both run on one rank (mpi4py's singleton). --dir must be on the filesystem to measure
(O_DIRECT-capable: not tmpfs). --cpu N pins the process (and so its I/O threads) to one
CPU: on a small VM, where a wake-up across CPUs costs tens of microseconds and varies,
that shows each side's own cost. --json FILE writes every figure.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

import swapcoord
from swapcoord.torch import OptimizerSwapper

MiB = 1 << 20


def bench_aio(args, directory):
    rows = []
    path = os.path.join(directory, "aio.bin")
    handle = swapcoord.AioHandle(args.block_size, args.queue_depth, False, True, args.threads)
    biggest = max(args.sizes_kib) * 1024
    buffer = handle.new_cpu_locked_tensor(biggest, torch.empty(0, dtype=torch.uint8))
    buffer.copy_(torch.randint(0, 256, (biggest,), dtype=torch.uint8))
    handle.sync_pwrite(buffer, path)
    for size_kib in args.sizes_kib:
        nbytes = size_kib * 1024
        view = buffer[:nbytes]
        for op in ("read", "write"):
            engine = swapcoord._swapcoord.EngineBench(path, op == "write", args.block_size, args.queue_depth,
                                                      args.threads)
            engine.run(view.data_ptr(), nbytes)  # warm-up: the engine's threads and kernel queue
            handle.sync_pread(view, path) if op == "read" else handle.sync_pwrite(view, path)
            engine_s, handle_s = [], []
            for i in range(args.repeats):
                def run_handle():
                    start = time.perf_counter()
                    if op == "read":
                        handle.sync_pread(view, path)
                    else:
                        handle.sync_pwrite(view, path)
                    handle_s.append(time.perf_counter() - start)
                # Alternate which goes first: on a shared disk the second of two back-to-back
                # transfers of the same bytes is often faster.
                if i % 2:
                    run_handle()
                engine_s.append(engine.run(view.data_ptr(), nbytes))
                if i % 2 == 0:
                    run_handle()
            e, h = statistics.median(engine_s), statistics.median(handle_s)
            # The ratio is the median over the back-to-back pairs (the disk's latency drifts
            # during a run; a pair sees the same state of it).
            ratio = statistics.median(a / b for a, b in zip(engine_s, handle_s))
            rows.append({"op": op, "size_kib": size_kib, "engine_us": e * 1e6, "handle_us": h * 1e6,
                         "engine_gbps": nbytes / e / 1e9, "handle_gbps": nbytes / h / 1e9, "ratio": ratio,
                         "engine_s": engine_s, "handle_s": handle_s})
    print(f"# aio: AioHandle (Python, path checked per call) vs IoEngine::run (C++), block {args.block_size}, "
          f"queue depth {args.queue_depth}, threads {args.threads}, {args.repeats} runs each, interleaved; medians")
    print(f"# {'op':>5} {'size':>8} {'engine':>9} {'handle':>9} {'engine':>9} {'handle':>9} {'handle/engine':>14}")
    print(f"# {'':>5} {'(KiB)':>8} {'(us)':>9} {'(us)':>9} {'(GB/s)':>9} {'(GB/s)':>9} {'(pairs)':>14}")
    for r in rows:
        print(f"  {r['op']:>5} {r['size_kib']:>8} {r['engine_us']:>9.1f} {r['handle_us']:>9.1f} {r['engine_gbps']:>9.3f} "
              f"{r['handle_gbps']:>9.3f} {r['ratio']:>14.3f}")
    return rows


def bench_optimizer(args, directory):
    from mpi4py import MPI
    numel = args.group_mib * MiB // 4
    torch.manual_seed(0)
    memory_params = [torch.randn(numel) for _ in range(args.groups)]
    nvme_params = [p.clone() for p in memory_params]
    memory_opt = torch.optim.Adam(memory_params, lr=1e-3)
    grads = [torch.randn(numel) for _ in range(args.groups)]
    swapper = OptimizerSwapper(torch.optim.Adam(nvme_params, lr=1e-3), MPI.COMM_WORLD, [numel] * args.groups,
                               roots=[os.path.join(directory, "root")], catalog_dir=os.path.join(directory, "catalog"),
                               job="bench", overwrite=True, buffer_size=args.buffer_mib * MiB,
                               buffer_count=args.buffer_count, verify=False)
    memory_s, nvme_s, stats = [], [], []
    try:
        for step in range(args.steps + 1):  # step 0 warms up (first touch of the state)
            for p, q, g in zip(memory_params, nvme_params, grads):
                p.grad, q.grad = g, g
            start = time.perf_counter()
            memory_opt.step()
            t_memory = time.perf_counter() - start
            start = time.perf_counter()
            swapper.step()
            t_nvme = time.perf_counter() - start
            if step > 0:
                memory_s.append(t_memory)
                nvme_s.append(t_nvme)
                stats.append(swapper.last_step_stats())
        same = all(torch.equal(p, q) for p, q in zip(memory_params, nvme_params))
    finally:
        swapper.close()
    per_group_update = statistics.median(s["update_s"] for s in stats) / args.groups
    per_group_read = statistics.median(s["swap_in_s"] for s in stats) / args.groups
    hidden = statistics.median(s["hidden_fraction"] for s in stats)

    def hidden_behind_updates(s):
        # The target's case: group j+1's read behind group j's update, where that update took
        # at least as long as the read. Group 0's read has nothing to hide behind here (a
        # training loop calls begin_step() before forward/backward).
        g = s["groups"]
        pairs = [(g[j], g[j + 1]) for j in range(len(g) - 1) if g[j]["update_s"] >= g[j + 1]["read_s"]]
        read = sum(nxt["read_s"] for _, nxt in pairs)
        hidden = max(0.0, 1.0 - sum(nxt["wait_s"] for _, nxt in pairs) / read) if read > 0 else None
        return hidden, len(pairs), len(g) - 1
    behind = [hidden_behind_updates(s) for s in stats]
    qualified = [h for h, _, _ in behind if h is not None]
    hidden_rest = statistics.median(qualified) if qualified else float("nan")
    pairs_used = sum(n for _, n, _ in behind)
    pairs_all = sum(n for _, _, n in behind)

    result = {"groups": args.groups, "group_mib": args.group_mib, "memory_step_s": memory_s, "nvme_step_s": nvme_s,
              "memory_median_s": statistics.median(memory_s), "nvme_median_s": statistics.median(nvme_s),
              "ratio": statistics.median(nvme_s) / statistics.median(memory_s), "update_per_group_s": per_group_update,
              "read_per_group_s": per_group_read, "hidden_fraction_median": hidden,
              "hidden_behind_updates_median": hidden_rest, "pairs_update_at_least_read": pairs_used,
              "pairs": pairs_all,
              "read_gbps": statistics.median(s["swap_in_bytes"] / s["swap_in_s"] / 1e9 for s in stats),
              "write_gbps": statistics.median(s["swap_out_bytes"] / max(s["swap_out_s"], 1e-9) / 1e9 for s in stats),
              "bit_identical": same, "stats": stats}
    print(f"# optimizer: Adam over {args.groups} groups of {args.group_mib} MiB fp32 (state {2 * args.group_mib} MiB "
          f"per group), {args.steps} steps after one warm-up, interleaved; medians")
    print(f"# {'state':>8} {'step':>10} {'update/grp':>11} {'read/grp':>10} {'read':>8} {'write':>8} {'hidden':>7} "
          f"{'hidden':>7}")
    print(f"# {'':>8} {'(ms)':>10} {'(ms)':>11} {'(ms)':>10} {'(GB/s)':>8} {'(GB/s)':>8} {'all(%)':>7} "
          f"{'1..(%)':>7}")
    print(f"  {'memory':>8} {result['memory_median_s'] * 1e3:>10.1f}")
    print(f"  {'nvme':>8} {result['nvme_median_s'] * 1e3:>10.1f} {per_group_update * 1e3:>11.1f} "
          f"{per_group_read * 1e3:>10.1f} {result['read_gbps']:>8.2f} {result['write_gbps']:>8.2f} {hidden * 100:>7.1f} "
          f"{hidden_rest * 100:>7.1f}")
    print(f"# hidden 1..: over the {pairs_used} of {pairs_all} group pairs whose update took at least as long as "
          f"the next group's read (target: 80 %)")
    print(f"# step time with the state on NVMe / in memory: {result['ratio']:.2f}; parameters bit-identical: {same}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", help="aio, optimizer (default: both)")
    parser.add_argument("--dir", default="/var/tmp", help="where the files go (a directory is made and removed)")
    parser.add_argument("--sizes-kib", type=int, nargs="+", default=[4, 1024, 4096, 16384, 65536],
                        help="transfer sizes of the aio comparison (4 KiB shows the fixed cost of a call)")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--block-size", type=int, default=MiB)
    parser.add_argument("--queue-depth", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-mib", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--buffer-mib", type=int, default=8)
    parser.add_argument("--buffer-count", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--cpu", type=int, help="run on this CPU only (sched_setaffinity): the I/O threads then "
                        "share it with Python, and the comparison is free of cross-CPU wake-up noise")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    args.what = args.what or ["aio", "optimizer"]
    for what in args.what:
        if what not in ("aio", "optimizer"):
            parser.error(f"unknown benchmark '{what}' (aio, optimizer)")
    torch.set_num_threads(args.torch_threads)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    directory = tempfile.mkdtemp(prefix="swapcoord-pybench-", dir=args.dir)
    out = {"argv": sys.argv, "options": vars(args)}
    try:
        if "aio" in args.what:
            out["aio"] = bench_aio(args, directory)
        if "optimizer" in args.what:
            out["optimizer"] = bench_optimizer(args, directory)
    finally:
        shutil.rmtree(directory)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
