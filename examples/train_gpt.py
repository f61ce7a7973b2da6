#!/usr/bin/env python3
"""A small GPT trained data-parallel over MPI, with its Adam state swapped to NVMe by swapcoord.

    mpirun -np 2 python3 examples/train_gpt.py --offload nvme --swap-dir /mnt/nvme/gpt --commit-every 5
    mpirun -np 1 python3 examples/train_gpt.py --offload nvme --swap-dir /mnt/nvme/gpt --resume --steps 40

Each rank holds the whole model and trains on its slice of every global batch. The
parameters live in one flat fp32 vector, cut into swap groups of about --group-numel
elements; each group is sharded across the ranks by swapcoord.shard_ranges (the same rule
the library's partitioner uses), and each rank's Adam updates only its shards (ZeRO-1).
A step is
  1. forward/backward on the local rows, gradients gathered into one flat vector,
  2. all-reduce (sum) of the flat gradient, divided by the rank count,
  3. the optimizer step on this rank's shards: in memory (--offload none) or through
     swapcoord.torch.OptimizerSwapper (--offload nvme), which swaps each group's Adam
     state in from NVMe before its update and back out after it (the first group's read
     runs behind forward/backward, each next group's behind the update before it),
  4. all-gather of the updated shards into every rank's flat vector (an exact copy),
  5. every --commit-every steps, swapper.commit(): the shards and Adam's state become a
     durable epoch that --resume continues from, at this or another rank count.
The batch of step s is a function of (seed, s) only, so runs at different rank counts see
the same global batches, and a killed and resumed run repeats the uninterrupted one.

Output follows nccl-tests: '#' header lines, a table with a units row, a footer.
Figures over ranks: swap bytes are summed, GB/s = summed bytes / the slowest rank's
seconds, step_ms is the slowest rank's, hidden_% is the lowest rank's share of swap-in
time that did not block its step (the swapper's hidden_fraction, 1 - wait_s / swap_in_s).
The run fails (exit 1) on a non-finite loss or on parameters that differ between ranks.
"""
import argparse
import hashlib
import json
import math
import os
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass

# One BLAS thread per rank, for OpenBLAS too (torch.set_num_threads does not reach a BLAS that
# torch finds only at run time as libblas.so.3); set before torch loads it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402 (after the environment above)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mpi4py import MPI  # noqa: E402

try:
    import swapcoord  # noqa: E402
except ImportError as error:  # the build tree's package, or an installed one
    sys.exit(f"train_gpt: {error}; set PYTHONPATH=<swapcoord build>/python or install swapcoord")

FP32_BYTES = 4


# ---------------------------------------------------------------------------- model
class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a 4x GELU MLP."""

    def __init__(self, d_model, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def attention(self, x):
        b, t, d = x.shape
        # [b, t, 3d] -> three [b, heads, t, head_dim]
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        future = torch.ones(t, t, dtype=torch.bool).triu(1)  # True above the diagonal
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, seq, d_model, layers, heads, tied_head):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        if tied_head:
            self.head.weight = self.tok.weight
        # GPT-2 initialization; the residual projections scaled down by sqrt(2 * layers).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # LayerNorm gains
                nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def flatten_parameters(model):
    """Moves every parameter into one flat fp32 vector and makes it a view of that vector.

    Returns the vector and [(parameter, offset, numel)] in model.parameters() order (a tied
    weight appears once)."""
    params = list(model.parameters())
    flat = torch.empty(sum(p.numel() for p in params), dtype=torch.float32)
    layout, offset = [], 0
    for p in params:
        n = p.numel()
        flat[offset:offset + n].copy_(p.detach().reshape(-1))
        p.data = flat[offset:offset + n].view_as(p)
        layout.append((p, offset, n))
        offset += n
    return flat, layout


# ----------------------------------------------------------------------------- data
def synthetic_batch(seed, step, batch, seq, vocab, noise=0.1):
    """The global batch of `step` (>= 1): [batch, seq + 1] tokens, a function of (seed, step).

    Each token follows its predecessor through a fixed random permutation of the vocabulary
    (drawn from stream slot 0), except that with probability `noise` it is drawn uniformly:
    a bigram rule the model learns within a few steps, with an entropy floor from the noise."""
    rule = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed * 1000003))
    g = torch.Generator().manual_seed(seed * 1000003 + step)
    tokens = torch.empty(batch, seq + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(vocab, (batch,), generator=g)
    replace = torch.rand(batch, seq, generator=g) < noise
    random_tokens = torch.randint(vocab, (batch, seq), generator=g)
    for t in range(seq):
        tokens[:, t + 1] = torch.where(replace[:, t], random_tokens[:, t], rule[tokens[:, t]])
    return tokens


# ------------------------------------------------------------------------ ZeRO-1 shards
def swap_groups(total, group_numel):
    """[(start, numel)] of the swap groups: consecutive pieces of the flat vector."""
    return [(s, min(group_numel, total - s)) for s in range(0, total, group_numel)]


def shard_layout(groups, world_size):
    """ranges[k][r] = (offset, count) of rank r's shard of group k, checked to tile the group."""
    ranges = []
    for k, (_, numel) in enumerate(groups):
        per_rank = [tuple(rc) for rc in swapcoord.shard_ranges(numel, world_size, element_size=FP32_BYTES)]
        covered = 0
        for offset, count in per_rank:
            if count > 0 and offset != covered:
                raise RuntimeError(f"group {k}: shard_ranges {per_rank} do not tile {numel} elements")
            covered += count
        if covered != numel:
            raise RuntimeError(f"group {k}: shard_ranges {per_rank} cover {covered} of {numel} elements")
        ranges.append(per_rank)
    return ranges


def allgather_shards(comm, flat, groups, ranges, shards):
    """Copies every rank's shard of every group into `flat` (exact; no arithmetic).

    A group's shards tile it in rank order, so each rank's piece is received straight into
    its place in the flat vector."""
    flat_np = flat.numpy()
    empty = flat_np[:0]
    for k, (start, numel) in enumerate(groups):
        counts = [count for _, count in ranges[k]]
        displs = [min(offset, numel) for offset, _ in ranges[k]]
        send = shards[k].numpy() if k in shards else empty
        comm.Allgatherv(send, [flat_np[start:start + numel], counts, displs, MPI.FLOAT])


def dump_state(path, swapper, group_numels, ranges, world_size, rank):
    """Writes this rank's restored or committed optimizer state (for bit-exact tests)."""
    sd = swapper.state_dict()
    state = sd["state"]
    steps = {int(s["step"]) for s in state.values()}
    if len(steps) > 1:
        raise RuntimeError(f"rank {rank}: the groups' Adam step counts differ: {sorted(steps)}")
    dump = {"group_numels": list(group_numels), "world_size": world_size,
            "ranges": {k: ranges[k][rank] for k in state},
            "exp_avg": {k: s["exp_avg"].clone() for k, s in state.items()},  # clones: a view would
            "exp_avg_sq": {k: s["exp_avg_sq"].clone() for k, s in state.items()},  # save its whole buffer
            "master": {k: t.clone() for k, t in sd["master"].items()}, "step": steps.pop() if steps else None}
    os.makedirs(path, exist_ok=True)
    target = os.path.join(path, f"rank-{rank}.pt")
    torch.save(dump, target + ".tmp")
    os.replace(target + ".tmp", target)  # a reader never sees half a file


# -------------------------------------------------------------------------- report
def summarize_swap(comm, stats):
    """Combines every rank's last_step_stats() (None without offload) into one row."""
    everyone = comm.allgather(stats)
    if everyone[0] is None:
        return {}
    out = {key: sum(s[key] for s in everyone) for key in ("swap_in_bytes", "swap_out_bytes")}
    for key in ("swap_in_s", "swap_out_s", "wait_s"):
        out[key] = max(s[key] for s in everyone)
    hidden = [s["hidden_fraction"] for s in everyone if s.get("hidden_fraction") is not None]
    out["hidden_fraction"] = min(hidden) if hidden else None
    return out


def gbps(nbytes, seconds):
    return nbytes / seconds / 1e9 if seconds and seconds > 0 else None


def cell(value, width, decimals):
    """A right-aligned table cell; '-' where there is no figure (no offload)."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="global batch in sequences, split evenly over the ranks")
    p.add_argument("--steps", type=int, default=20, help="last step to run (steps are numbered from 1)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--optimizer", choices=["adam", "adamw"], default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32"], default="float32")
    p.add_argument("--untied-head", action="store_true", help="an LM head of its own (default: tied to the embedding)")
    p.add_argument("--group-numel", type=int, default=65536, help="elements per swap group (the last is smaller)")
    p.add_argument("--offload", choices=["none", "nvme"], default="none")
    p.add_argument("--swap-dir", help="swap files under DIR/root, catalog in DIR/catalog (default /tmp/swapcoord-JOB)")
    p.add_argument("--job", default="train-gpt")
    p.add_argument("--commit-every", type=int, default=0, metavar="K",
                   help="commit after every step s with s %% K == 0")
    p.add_argument("--resume", action="store_true", help="continue from the last committed step")
    p.add_argument("--kill-at-step", type=int, default=0, metavar="S",
                   help="rank 0 SIGKILLs itself after step S (tests)")
    p.add_argument("--state-dump", metavar="DIR",
                   help="each rank writes DIR/rank-<r>.pt after each commit, or after the resume")
    p.add_argument("--json", metavar="FILE", help="rank 0 writes the results")
    p.add_argument("--param-dump", metavar="FILE", help="rank 0 torch.saves the final flat parameters")
    args = p.parse_args(argv)
    if args.offload == "nvme":
        args.swap_dir = args.swap_dir or f"/tmp/swapcoord-{args.job}"
    if args.offload == "none" and (args.resume or args.commit_every or args.state_dump):
        p.error("--resume, --commit-every and --state-dump need --offload nvme")
    if args.d_model % args.heads:
        p.error("--d-model must be a multiple of --heads")
    if min(args.layers, args.heads, args.vocab, args.seq, args.batch, args.group_numel) < 1:
        p.error("--layers, --heads, --vocab, --seq, --batch and --group-numel must be positive")
    return args


# --------------------------------------------------------------------------- train
@dataclass
class Job:
    """One rank's training state."""
    args: argparse.Namespace
    comm: MPI.Comm
    model: GPT
    flat: torch.Tensor  # every parameter, fp32 (the parameters are views of it)
    flat_grad: torch.Tensor
    layout: list  # [(parameter, offset in flat, numel)]
    groups: list  # [(start in flat, numel)] of the swap groups
    ranges: list  # ranges[k][r] = (offset in group k, count) of rank r's shard
    shards: dict  # {k: this rank's shard of group k}, the optimizer's parameters
    optimizer: object  # torch.optim.Adam / AdamW over the shards; None when this rank owns none
    swapper: object = None  # swapcoord.torch.OptimizerSwapper with --offload nvme


def build(args, comm):
    """The model, its flat vector, this rank's shards and their optimizer (and swapper)."""
    rank, world = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)  # determinism, and the ranks share the cores
    torch.manual_seed(args.seed)  # identical initialization on every rank
    model = GPT(args.vocab, args.seq, args.d_model, args.layers, args.heads, not args.untied_head)
    flat, layout = flatten_parameters(model)
    groups = swap_groups(flat.numel(), args.group_numel)
    ranges = shard_layout(groups, world)

    # This rank's shards: copies (not views) of its pieces of the flat vector, group order.
    shards = {}
    for k, (start, _) in enumerate(groups):
        offset, count = ranges[k][rank]
        if count > 0:
            shards[k] = flat[start + offset:start + offset + count].clone()
    # A rank that owns no shard (more ranks than shards of small groups) has no optimizer:
    # torch.optim refuses an empty parameter list; the swapper takes None.
    opt_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(list(shards.values()), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=args.weight_decay, foreach=False) if shards else None
    job = Job(args, comm, model, flat, torch.zeros_like(flat), layout, groups, ranges, shards, optimizer)

    if args.offload == "nvme":
        from swapcoord.torch import OptimizerSwapper
        # A fresh run replaces the job's previous catalog; --resume restores the shards'
        # values and Adam's state from it, re-partitioned for this rank count.
        fresh_or_resume = {"resume": True} if args.resume else {"overwrite": True}
        job.swapper = OptimizerSwapper(optimizer, comm, [numel for _, numel in groups],
                                       roots=[os.path.join(args.swap_dir, "root")],
                                       catalog_dir=os.path.join(args.swap_dir, "catalog"), job=args.job,
                                       **fresh_or_resume)
    return job


def train_step(job, step):
    """One step; returns this rank's loss (a float) and the step's seconds."""
    args, comm, rank, world = job.args, job.comm, job.comm.Get_rank(), job.comm.Get_size()
    t0 = time.perf_counter()
    if job.swapper is not None:
        job.swapper.begin_step()  # the first group's state is read during forward/backward
    # 1. Forward/backward on this rank's rows of the global batch.
    rows = args.batch // world
    tokens = synthetic_batch(args.seed, step, args.batch, args.seq, args.vocab)[rank * rows:(rank + 1) * rows]
    job.model.zero_grad(set_to_none=True)
    logits = job.model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))
    loss.backward()
    for p, offset, n in job.layout:
        job.flat_grad[offset:offset + n].copy_(p.grad.reshape(-1))
    # 2. Gradient all-reduce: the mean over the ranks' equal-sized batches.
    comm.Allreduce(MPI.IN_PLACE, job.flat_grad.numpy(), op=MPI.SUM)
    job.flat_grad.div_(world)
    # 3. Optimizer step on this rank's shards, in memory or with the state swapped.
    for k, shard in job.shards.items():
        start, offset, count = job.groups[k][0], *job.ranges[k][rank]
        shard.grad = job.flat_grad[start + offset:start + offset + count].clone()
    if job.swapper is None:
        if job.optimizer is not None:
            job.optimizer.step()
    else:
        job.swapper.step()
    # 4. Every rank's updated shards into every rank's flat parameters.
    allgather_shards(comm, job.flat, job.groups, job.ranges, job.shards)
    return loss.item(), time.perf_counter() - t0


def print_header(job, start_step, say):
    args, comm, flat = job.args, job.comm, job.flat
    hosts = comm.gather((socket.gethostname(), os.getpid(), sum(s.numel() for s in job.shards.values())))
    say(f"# swapcoord train_gpt: GPT data-parallel, ZeRO-1 {args.optimizer}, optimizer offload: {args.offload}")
    say("# options: " + "  ".join(f"{k} {v}" for k, v in vars(args).items() if v is not None and v is not False))
    say(f"# ranks: {comm.Get_size()}, {args.batch // comm.Get_size()} sequences each")
    for r, (host, pid, owned) in enumerate(hosts or []):
        say(f"#   rank {r:3d}  host {host}  pid {pid}  shard elements {owned}")
    say(f"# model: {flat.numel()} parameters ({flat.numel() * FP32_BYTES / 2**20:.2f} MiB fp32), "
        f"{'untied' if args.untied_head else 'tied'} head; "
        f"{len(job.groups)} swap groups of <= {args.group_numel} elements")
    if job.swapper is not None:
        say(f"# swap: roots {args.swap_dir}/root  catalog {args.swap_dir}/catalog  job {args.job}"
            + (f"  resumed from step {start_step - 1}" if args.resume else ""))
    say(f"#{'step':>6} {'loss':>16} {'swap_in':>9} {'swap_out':>9} {'step':>9} {'hidden':>7}")
    say(f"#{'':>6} {'':>16} {'GB/s':>9} {'GB/s':>9} {'ms':>9} {'%':>7}", flush=True)


def train(args, comm):
    rank, world = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.batch % world:
        say(f"error: --batch {args.batch} is not divisible by {world} ranks", file=sys.stderr)
        return 2
    job = build(args, comm)
    start_step = 1
    if args.resume:
        metadata = job.swapper.metadata
        if not metadata or "step" not in metadata:
            raise RuntimeError(f"resume: the last commit's metadata has no step ({metadata!r})")
        start_step = int(metadata["step"]) + 1
        allgather_shards(comm, job.flat, job.groups, job.ranges, job.shards)  # the restored master
        if args.state_dump:
            dump_state(args.state_dump, job.swapper, [n for _, n in job.groups], job.ranges, world, rank)
            comm.Barrier()
    print_header(job, start_step, say)

    records, bad = [], False
    for step in range(start_step, args.steps + 1):
        local_loss, step_s = train_step(job, step)
        # Report (collective: every rank takes part).
        loss = comm.allreduce(local_loss, op=MPI.SUM) / world
        bad |= not math.isfinite(loss)
        swap = summarize_swap(comm, job.swapper.last_step_stats() if job.swapper else None)
        record = {"step": step, "loss": loss, "loss_hex": struct.pack(">d", loss).hex(),
                  "step_s": comm.allreduce(step_s, op=MPI.MAX), **swap}
        hidden = swap.get("hidden_fraction")
        say(f" {step:6d} {loss:16.9g} {cell(gbps(swap.get('swap_in_bytes', 0), swap.get('swap_in_s')), 9, 3)} "
            f"{cell(gbps(swap.get('swap_out_bytes', 0), swap.get('swap_out_s')), 9, 3)} "
            f"{record['step_s'] * 1e3:9.2f} {cell(None if hidden is None else 100 * hidden, 7, 1)}", flush=True)

        # 5. Commit: this step's shards and Adam state become the epoch a resume starts from.
        if job.swapper is not None and args.commit_every and step % args.commit_every == 0:
            t0 = time.perf_counter()
            epoch = job.swapper.commit({"step": step})
            record["commit_epoch"], record["commit_s"] = epoch, comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            say(f"# commit: step {step} -> epoch {epoch} in {record['commit_s'] * 1e3:.1f} ms", flush=True)
            if args.state_dump:
                dump_state(args.state_dump, job.swapper, [n for _, n in job.groups], job.ranges, world, rank)
                comm.Barrier()  # every rank's dump is complete before a --kill-at-step
        records.append(record)
        if step == args.kill_at_step and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no footer

    # Footer. Every rank must hold the same parameters (the all-gather copies exactly).
    digest = hashlib.sha256(job.flat.numpy().tobytes()).hexdigest()
    same = len(set(comm.allgather(digest))) == 1
    say(f"# final loss: {records[-1]['loss']:.9g}" if records else "# no steps run")
    if job.swapper is not None and records:
        moved_in = sum(r["swap_in_bytes"] for r in records)
        moved_out = sum(r["swap_out_bytes"] for r in records)
        say(f"# avg swap in: {cell(gbps(moved_in, sum(r['swap_in_s'] for r in records)), 0, 3)} GB/s,  "
            f"swap out: {cell(gbps(moved_out, sum(r['swap_out_s'] for r in records)), 0, 3)} GB/s  "
            f"({(moved_in + moved_out) / 1e9:.3f} GB moved)")
    say(f"# parameters sha256 {digest}, identical on all ranks: {'yes' if same else 'NO'}")
    say(f"# errors: {int(not same) + int(bad)}", flush=True)
    if rank == 0 and args.param_dump:
        torch.save(job.flat.clone(), args.param_dump)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "options": vars(args), "world_size": world,
                       "parameters": job.flat.numel(), "group_numels": [n for _, n in job.groups],
                       "steps": records, "final_param_sha256": digest,
                       "resumed_from_step": start_step - 1 if args.resume else None}, f, indent=1)
    if job.swapper is not None:
        # close() is local (it waits for this rank's I/O and ends its session). After an
        # error, main() aborts the job instead: the other ranks may be inside a collective.
        job.swapper.close()
    return 0 if same and not bad else 1


def main():
    args = parse_args(sys.argv[1:])
    comm = MPI.COMM_WORLD
    try:
        code = train(args, comm)
    except Exception:
        # One rank failing would leave the others waiting in a collective: end the job.
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
