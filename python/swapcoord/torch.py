"""swapcoord.torch.OptimizerSwapper: Adam / AdamW whose state lives on NVMe.

The counterpart of DeepSpeed's PartitionedOptimizerSwapper / PipelinedOptimizerSwapper
for a ZeRO-style sharded optimizer. The caller cuts its flat parameter vector into swap
groups of `group_numels` elements (the same list on every rank) and gives the optimizer
this rank's fp32 shard of each group that it owns a piece of, in group order; the shards
are the sharded policy's (swapcoord.shard_ranges(group_numel, world_size) tells which). A
rank that owns no piece of any group (more ranks than shards) passes optimizer=None: it
takes part in the collective calls and swaps nothing.

    shards = [flat[g0 + off : g0 + off + n].clone() for each group ...]
    optimizer = torch.optim.Adam(shards, lr=1e-3)
    swapper = OptimizerSwapper(optimizer, comm, group_numels, roots=["/nvme"],
                               catalog_dir="/shared/ckpt", job="opt", overwrite=True)
    for step in ...:
        swapper.begin_step()        # optional: starts reading group 0's state now
        loss.backward(); ...        # set each shard's .grad
        swapper.step()              # each group: state in, update, state out
        if step % 100 == 0:
            swapper.commit({"step": step})

The session holds, per group k, the tensors exp_avg.k, exp_avg_sq.k and master.k (the fp32
master copy: the optimizer's parameter values). step() reads group k+1's state while group
k is updated (the session's I/O thread runs reads and writes in order, behind the caller's
compute), writes group k's state back (behind the next group's update) and returns when
the last write is done. Only two groups' state is in memory at a time.

master_on_nvme=True (for fp16 / bf16 models, whose fp32 masters are the optimizer's
parameters) also keeps the masters on NVMe: between steps a parameter is a placeholder of
its shape that holds one element (so that .grad can still be set),
and step(on_group_updated=f) calls f(group, master) while group's master is in memory,
for the caller to copy it into its 16-bit parameters. Otherwise the masters stay in
memory and are written only by commit().

commit() makes the state durable (the session's catalog) with the caller's metadata;
OptimizerSwapper(..., resume=True) continues from the last commit, also at another rank
count: it restores the parameters' values (this rank's shards of the masters), Adam's
step counts and `metadata`. state_dict() / load_state_dict() move the whole state of this
rank's shards through memory.
"""
import json
import time

import torch

from . import _swapcoord
from ._tensors import pinned_empty
from .session import Session

_STATE_KEYS = ("exp_avg", "exp_avg_sq")


class OptimizerSwapper:
    def __init__(self, optimizer, comm, group_numels, *, resume=False, master_on_nvme=False, **session_options):
        self.optimizer = optimizer
        self.comm = comm
        self.group_numels = [int(n) for n in group_numels]
        self.master_on_nvme = bool(master_on_nvme)
        self._broken = None  # why the swapper cannot go on (a step that failed part-way)
        specs = []
        for k, n in enumerate(self.group_numels):
            specs += [(f"exp_avg.{k}", [n], "float32"), (f"exp_avg_sq.{k}", [n], "float32"),
                      (f"master.{k}", [n], "float32")]
        session_options.setdefault("policy", "sharded")
        # Every group is cut by shard_ranges (a group's master and its Adam state alike),
        # also a group below the default threshold, which would be placed whole.
        session_options.setdefault("shard_threshold", 0)
        # A mistake found here is raised by the session's creation on every rank (naming
        # this rank), so that no rank waits in it for one that gave up.
        problem = ""
        try:
            self._check_optimizer()
            if session_options["policy"] != "sharded":
                raise _swapcoord.ConfigError("OptimizerSwapper: the session's policy must be 'sharded' (one shard of "
                                             f"each group per rank), not '{session_options['policy']}'")
            if session_options["shard_threshold"] not in (0, "0"):
                raise _swapcoord.ConfigError("OptimizerSwapper: the session's shard_threshold must be 0 (every group "
                                             f"cut by shard_ranges), not {session_options['shard_threshold']!r}")
        except _swapcoord.ConfigError as error:
            problem = str(error)
        self.session = Session._open(comm, specs, None, None, session_options, resume, problem)
        error = None
        try:
            self._bind_params()
            self._buffers = [self._buffer_set(), self._buffer_set()]
            self._pending_out = []             # swap-outs in flight (waited for by the next step)
            self._early = None                 # begin_step()'s read of the first group
            self._stats = {}
            self.metadata = None
            if resume:
                self._restore()
            else:
                self._initialise()
        except Exception as e:  # noqa: BLE001 (agreed on below, then raised on every rank)
            error = e
        try:
            _agree(comm, error, "OptimizerSwapper")
        except BaseException:
            self.session.close()
            raise

    def _check_optimizer(self):
        optimizer = self.optimizer
        if optimizer is None:
            return
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise _swapcoord.ConfigError(
                f"OptimizerSwapper: wraps torch.optim.Adam or AdamW, not {type(optimizer).__name__}")
        for i, group in enumerate(optimizer.param_groups):
            for key, why in (("amsgrad", "its max_exp_avg_sq would be a third swapped tensor"),
                             ("capturable", "it is for CUDA graphs"), ("fused", "it is a CUDA kernel")):
                if group.get(key):
                    raise _swapcoord.ConfigError(f"OptimizerSwapper: param_groups[{i}] has {key}=True, which is not "
                                                 f"supported ({why})")

    @classmethod
    def resume(cls, optimizer, comm, group_numels, **options):
        """The same as OptimizerSwapper(..., resume=True): continues from the last commit."""
        return cls(optimizer, comm, group_numels, resume=True, **options)

    # -- set-up ---------------------------------------------------------------------------
    def _bind_params(self):
        """Pairs this rank's pieces (group order) with the optimizer's parameters."""
        groups = [] if self.optimizer is None else self.optimizer.param_groups
        params = [p for group in groups for p in group["params"]]
        self._group_of = {id(p): i for i, group in enumerate(groups) for p in group["params"]}
        self._local = []  # (group index k, param, numel)
        for k in range(len(self.group_numels)):
            piece = self.session.local_piece(f"master.{k}")
            if piece is not None:
                self._local.append((k, piece[0], piece[1]))
        if len(params) != len(self._local):
            raise _swapcoord.ConfigError(
                f"OptimizerSwapper: rank {self.session.rank} owns a piece of {len(self._local)} of the "
                f"{len(self.group_numels)} groups, the optimizer has {len(params)} parameters (one per owned group, "
                "in group order, is expected; None for a rank that owns none)")
        bound = []
        for (k, offset, numel), p in zip(self._local, params):
            if p.dtype != torch.float32 or p.numel() != numel or p.device.type != "cpu" or not p.is_contiguous():
                raise _swapcoord.ConfigError(
                    f"OptimizerSwapper: group {k}: rank {self.session.rank}'s shard is elements [{offset}, "
                    f"{offset + numel}) ({numel} float32 on the CPU, contiguous); the optimizer's parameter has "
                    f"{p.numel()} {p.dtype} on {p.device}")
            bound.append((k, p, numel))
        self._local = bound
        self._capacity = max((n for _, _, n in bound), default=0)

    def _buffer_set(self):
        # Page-aligned: each group's state is read and written in place (no staging copy).
        keys = _STATE_KEYS + (("master",) if self.master_on_nvme else ())
        return {key: pinned_empty(self._capacity, torch.float32, "OptimizerSwapper") for key in keys}

    def _names(self, k, with_master):
        names = [f"exp_avg.{k}", f"exp_avg_sq.{k}"]
        return names + [f"master.{k}"] if with_master else names

    def _initialise(self):
        """A new run: each parameter's state as the optimizer holds it (after steps taken
        before the swapper, or optimizer.load_state_dict), else Adam's initial state (zeros,
        step 0), and the masters, written once so that every piece has a copy before the
        first step or commit."""
        zeros = torch.zeros(self._capacity, dtype=torch.float32)
        for k, p, n in self._local:
            state = self.optimizer.state.get(p, {})
            if "exp_avg" in state:
                exp_avg, exp_avg_sq = state["exp_avg"].contiguous(), state["exp_avg_sq"].contiguous()
                step = state["step"].clone() if torch.is_tensor(state["step"]) else torch.tensor(float(state["step"]))
            else:
                exp_avg, exp_avg_sq, step = zeros[:n], zeros[:n], torch.tensor(0.0)
            self.session.swap_out(self._names(k, True), [exp_avg, exp_avg_sq, p.detach()])
            self.optimizer.state[p] = {"step": step}  # the rest is on NVMe now
            if self.master_on_nvme:
                p.data = _placeholder(n)

    def _restore(self):
        """A resumed run: the masters into the parameters, the step counts and the caller's
        metadata from the commit."""
        record = self.session.metadata
        if not isinstance(record, dict) or "optimizer_steps" not in record:
            raise _swapcoord.ConfigError(
                f"OptimizerSwapper: the catalog '{self.session.catalog_path}' was not committed by an "
                "OptimizerSwapper (its metadata has no optimizer_steps)")
        if record.get("group_numels") != self.group_numels:
            raise _swapcoord.ConfigError(
                f"OptimizerSwapper: the catalog '{self.session.catalog_path}' holds groups of "
                f"{record.get('group_numels')} elements, this run asks for {self.group_numels}")
        steps = record["optimizer_steps"]
        for k, p, n in self._local:
            if not self.master_on_nvme:
                self.session.swap_in(f"master.{k}", p.detach())
            else:
                p.data = _placeholder(n)
            self.optimizer.state[p] = {"step": torch.tensor(float(steps[str(k)]))}
        self.metadata = record.get("user")

    # -- the step -------------------------------------------------------------------------
    def begin_step(self):
        """Starts reading the first group's state now (call it before forward/backward so
        that the read overlaps them); step() then finds it in memory."""
        if self._local and self._early is None:
            k, _, n = self._local[0]
            self._early = self._read(0, k, n)

    def _read(self, slot, k, n):
        buffers = self._buffers[slot]
        names = self._names(k, self.master_on_nvme)
        tensors = [buffers[key][:n] for key in _STATE_KEYS + (("master",) if self.master_on_nvme else ())]
        return self.session.swap_in_async(names, tensors)

    def _wait_out(self):
        """Waits for the swap-outs in flight, adding their figures to the step's."""
        pending, self._pending_out = self._pending_out, []
        start = time.perf_counter()
        for handle in pending:
            figures = handle.wait()
            self._stats["swap_out_bytes"] = self._stats.get("swap_out_bytes", 0) + figures["bytes"]
            self._stats["swap_out_s"] = self._stats.get("swap_out_s", 0.0) + figures["seconds"]
        self._stats["out_wait_s"] = self._stats.get("out_wait_s", 0.0) + time.perf_counter() - start

    def step(self, closure=None, on_group_updated=None):
        """One optimizer step over every group: group k+1's state is read while group k is
        updated, then group k's is written. `closure` is called once, first (as
        torch.optim's); on_group_updated(k, master) after each group's update."""
        self._usable()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        try:
            self._step(on_group_updated)
        except BaseException as error:
            # Some groups were updated and some not: committing that would record a state
            # no run ever had. The swapper refuses to go on; resume from the last commit.
            self._broken = f"a step failed part-way ({type(error).__name__}: {error})"
            raise
        return loss

    def _usable(self):
        if self._broken:
            raise _swapcoord.Error(f"OptimizerSwapper: {self._broken}; resume from the last commit")

    def _step(self, on_group_updated):
        start = time.perf_counter()
        stats = self._stats = {"swap_in_bytes": 0, "swap_in_s": 0.0, "wait_s": 0.0, "update_s": 0.0, "groups": []}
        in_flight = self._early
        self._early = None
        for j, (k, p, n) in enumerate(self._local):
            slot = j % 2
            if in_flight is None:
                in_flight = self._read(slot, k, n)
            handle = in_flight
            wait_start = time.perf_counter()
            figures = handle.wait()
            waited = time.perf_counter() - wait_start
            stats["wait_s"] += waited
            stats["swap_in_bytes"] += figures["bytes"]
            stats["swap_in_s"] += figures["seconds"]
            in_flight = None
            if j + 1 < len(self._local):  # the next group's read overlaps this update
                # Into the other buffer set, which the write of group j-1 still reads: the
                # session's I/O thread runs calls in order, so this read starts after it.
                k2, _, n2 = self._local[j + 1]
                in_flight = self._read(1 - slot, k2, n2)
            update_start = time.perf_counter()
            self._update(k, p, n, self._buffers[slot])
            if on_group_updated is not None:
                on_group_updated(k, p)
            updated = time.perf_counter() - update_start
            stats["update_s"] += updated
            stats["groups"].append({"group": k, "read_s": figures["seconds"], "wait_s": waited, "update_s": updated})
            self._write(slot, k, p, n)
        self._wait_out()  # the writes overlapped the updates after them; the last one is waited for here
        stats["step_s"] = time.perf_counter() - start

    def _update(self, k, p, n, buffers):
        """Adam's update of one parameter, with its state in `buffers`."""
        state = self.optimizer.state[p]
        state["exp_avg"] = buffers["exp_avg"][:n]
        state["exp_avg_sq"] = buffers["exp_avg_sq"][:n]
        if self.master_on_nvme:
            p.data = buffers["master"][:n]
        # torch's own step, over this one parameter: every param group holds it or nothing.
        groups = self.optimizer.param_groups
        mine = self._group_of[id(p)]
        saved = [g["params"] for g in groups]
        try:
            for i, g in enumerate(groups):
                g["params"] = [p] if i == mine else []
            self.optimizer.step()
        finally:
            for g, params in zip(groups, saved):
                g["params"] = params

    def _write(self, slot, k, p, n):
        buffers = self._buffers[slot]
        state = self.optimizer.state[p]
        tensors = [buffers["exp_avg"][:n], buffers["exp_avg_sq"][:n]]
        if self.master_on_nvme:
            tensors.append(buffers["master"][:n])
        self._pending_out.append(self.session.swap_out_async(self._names(k, self.master_on_nvme), tensors))
        del state["exp_avg"], state["exp_avg_sq"]
        if self.master_on_nvme:
            p.data = _placeholder(n)

    def wait(self):
        """Waits for reads and writes still in flight (begin_step()'s read, or writes of a
        step that raised)."""
        self._wait_out()
        if self._early is not None:
            self._early.wait()
            self._early = None

    def last_step_stats(self):
        """Figures of the last step() on this rank: swap_in_bytes, swap_in_s (the reads'
        own time), swap_out_bytes, swap_out_s (of the writes waited for so far), wait_s
        (time step() was blocked on reads), out_wait_s (blocked on writes), update_s, step_s,
        and hidden_fraction: the share of read time hidden behind compute,
        1 - wait_s / swap_in_s; groups: per group, its read_s, wait_s and update_s."""
        s = dict(self._stats)
        s.setdefault("swap_out_bytes", 0)
        s.setdefault("swap_out_s", 0.0)
        s.setdefault("wait_s", 0.0)
        read_s = s.get("swap_in_s", 0.0)
        s["hidden_fraction"] = max(0.0, 1.0 - s["wait_s"] / read_s) if read_s > 0 else 1.0
        return s

    # -- durability -----------------------------------------------------------------------
    def commit(self, metadata=None):
        """Collective: the state of every group and the masters become durable, recorded
        with `metadata` (JSON-serialisable; given back as `metadata` on resume). Returns
        the epoch. A failure on any rank raises on every rank, naming the rank."""
        error, steps = None, {}
        try:
            self._usable()
            self.wait()
            if not self.master_on_nvme:
                for k, p, n in self._local:
                    self.session.swap_out(f"master.{k}", p.detach())
            steps = {str(k): float(self.optimizer.state[p]["step"]) for k, p, _ in self._local}
            record = json.dumps({"user": metadata, "optimizer_steps": {}, "group_numels": self.group_numels})
            if len(record) > 16 * 1024:
                raise _swapcoord.ConfigError(f"commit: the metadata takes {len(record)} bytes as JSON; at most 16 KiB "
                                             "(the swapper's own record needs the rest of the catalog's 32 KiB)")
        except Exception as e:  # noqa: BLE001 (agreed on below)
            error = e
        parts = _agree(self.comm, error, "OptimizerSwapper.commit", steps)
        merged = {}
        for part in parts:
            merged.update(part)
        record = {"user": metadata, "optimizer_steps": merged, "group_numels": self.group_numels,
                  "optimizer": type(self.optimizer).__name__ if self.optimizer is not None else None}
        return self.session.commit(record)

    def state_dict(self):
        """This rank's state, read into memory: {"state": {k: {"exp_avg", "exp_avg_sq",
        "step"}}, "master": {k: tensor}, "ranges": {k: (offset, numel)}, "group_numels"}."""
        self.wait()
        out = {"state": {}, "master": {}, "ranges": {}, "group_numels": list(self.group_numels)}
        for k, p, n in self._local:
            exp_avg, exp_avg_sq, master = (torch.empty(n, dtype=torch.float32) for _ in range(3))
            self.session.swap_in(self._names(k, True), [exp_avg, exp_avg_sq, master])
            if not self.master_on_nvme:
                master = p.detach().clone()  # the parameter's current value (written only at commit)
            out["state"][k] = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                               "step": self.optimizer.state[p]["step"].clone()}
            out["master"][k] = master
            out["ranges"][k] = self.session.local_piece(f"master.{k}")
        return out

    def load_state_dict(self, state_dict):
        """Writes a state_dict() of the same layout (this rank's groups) back."""
        self.wait()
        self._broken = None  # the whole state is given anew
        if list(state_dict.get("group_numels", [])) != self.group_numels:
            raise _swapcoord.ConfigError(f"load_state_dict: groups of {state_dict.get('group_numels')} elements, "
                                         f"this swapper has {self.group_numels}")
        for k, p, n in self._local:
            if k not in state_dict["state"]:
                raise _swapcoord.ConfigError(f"load_state_dict: no state for group {k} (rank {self.session.rank} "
                                             "owns a piece of it)")
            ranges = state_dict.get("ranges", {})
            mine = self.session.local_piece(f"master.{k}")
            if k in ranges and tuple(ranges[k]) != tuple(mine):
                raise _swapcoord.ConfigError(
                    f"load_state_dict: group {k}: the state is of elements {tuple(ranges[k])} (offset, count), rank "
                    f"{self.session.rank} owns {tuple(mine)} in this job (saved at another rank count? resume from "
                    "a commit re-partitions; a state_dict does not)")
            s = state_dict["state"][k]
            master = state_dict["master"][k]
            self.session.swap_out(self._names(k, True), [s["exp_avg"].contiguous(), s["exp_avg_sq"].contiguous(),
                                                         master.contiguous()])
            self.optimizer.state[p] = {"step": s["step"].clone()}
            if not self.master_on_nvme:
                p.detach().copy_(master)

    def close(self):
        try:
            self.wait()
        finally:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _agree(comm, error, what, value=None):
    """Collective: every rank learns whether one failed. Returns every rank's `value`; else
    raises on every rank the first failing rank's error (a ConfigError when it was one,
    else a PhaseError naming the rank), chained to the local one where it happened."""
    mine = None if error is None else (type(error).__name__, str(error), isinstance(error, _swapcoord.ConfigError))
    everyone = comm.allgather((mine, value))
    for rank, (failure, _) in enumerate(everyone):
        if failure is not None:
            kind, message, config = failure
            if config:  # the message says what; name the rank unless it does
                text = message if f"rank {rank} " in message else f"rank {rank}: {message}"
            else:
                text = f"{what}: rank {rank}: {kind}: {message}"
            raised = _swapcoord.ConfigError(text) if config else _swapcoord.PhaseError(text)
            if not config:
                raised.failed_rank = rank
            raise raised from error
    return [v for _, v in everyone]


def _placeholder(numel):
    """A float32 tensor of `numel` elements backed by one (stride 0): the shape a
    parameter needs for its .grad, without its memory."""
    return torch.zeros(1, dtype=torch.float32).expand(numel)
