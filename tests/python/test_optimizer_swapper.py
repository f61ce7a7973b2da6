"""swapcoord.Session and swapcoord.torch.OptimizerSwapper under mpirun (ctest label python,
np 1 and 2): every step with the state on NVMe is bit-identical to torch's own optimizer
with the state in memory (Adam, AdamW, fp16 parameters with fp32 masters on NVMe);
state_dict / load_state_dict and commit / resume give the state back bit for bit; bad
use raises errors that say what was wrong."""
import os
import shutil
import tempfile
import unittest

import torch
from mpi4py import MPI

import swapcoord
from swapcoord.torch import OptimizerSwapper

comm = MPI.COMM_WORLD
W, R = comm.size, comm.rank
NUMELS = [5000, 3000, 700, 20000]  # 700 < one shard (1024): at np 2 rank 1 owns none of it


def shards(full, dtype=torch.float32):
    out = []
    for k, n in enumerate(NUMELS):
        offset, count = swapcoord.shard_ranges(n, W)[R]
        if count:
            out.append(full[k][offset:offset + count].clone().to(dtype))
    return out


def grads(step, params):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.numel(), generator=g) for p in params]


class OptimizerSwapperTest(unittest.TestCase):
    def setUp(self):
        self.dir = comm.bcast(tempfile.mkdtemp(prefix="swapcoord-opt-", dir="/var/tmp") if R == 0 else None)
        torch.manual_seed(0)
        self.full = [torch.randn(n) for n in NUMELS]
        self.options = dict(roots=[os.path.join(self.dir, "root")], catalog_dir=os.path.join(self.dir, "catalog"),
                            job="opt", phase_timeout_s=60)

    def tearDown(self):
        comm.Barrier()
        if R == 0:
            shutil.rmtree(self.dir)

    def swapper(self, optimizer, **extra):
        options = dict(self.options)
        options.update(extra)
        if not extra.get("resume"):
            options.setdefault("overwrite", True)
        return OptimizerSwapper(optimizer, comm, NUMELS, **options)

    def check_same_as_in_memory(self, make_optimizer):
        ref, mine = shards(self.full), shards(self.full)
        ref_opt, my_opt = make_optimizer(ref), make_optimizer(mine)
        with self.swapper(my_opt) as swapper:
            for step in range(4):
                for p, q, g in zip(ref, mine, grads(step, ref)):
                    p.grad, q.grad = g.clone(), g.clone()
                ref_opt.step()
                swapper.begin_step()
                swapper.step()
                for p, q in zip(ref, mine):
                    self.assertTrue(torch.equal(p, q), f"step {step}")
            state = swapper.state_dict()
            for (k, s), p in zip(sorted(state["state"].items()), ref):
                for key in ("exp_avg", "exp_avg_sq"):
                    self.assertTrue(torch.equal(s[key], ref_opt.state[p][key]), (k, key))
                self.assertEqual(float(s["step"]), 4.0)
            stats = swapper.last_step_stats()
            self.assertEqual(stats["swap_in_bytes"], stats["swap_out_bytes"])
            self.assertGreater(stats["swap_in_bytes"], 0)

    def test_adam_is_bit_identical_to_in_memory(self):
        self.check_same_as_in_memory(lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01))

    def test_adamw_is_bit_identical_to_in_memory(self):
        self.check_same_as_in_memory(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1))

    def test_fp16_model_with_fp32_masters_on_nvme(self):
        ref_master = shards(self.full)
        ref_opt = torch.optim.Adam(ref_master, lr=1e-2)
        my_master = shards(self.full)
        model16 = [m.half() for m in my_master]     # the model's 16-bit parameters
        my_opt = torch.optim.Adam(my_master, lr=1e-2)
        with self.swapper(my_opt, master_on_nvme=True) as swapper:
            self.assertTrue(all(p.stride() == (0,) for p in my_master))  # masters hold no memory
            index = {k: j for j, (k, _, _) in enumerate(swapper._local)}

            def copy_out(k, master):
                model16[index[k]].copy_(master)
            for step in range(3):
                for p, q, g in zip(ref_master, my_master, grads(step, ref_master)):
                    p.grad, q.grad = g.clone(), g.clone()
                ref_opt.step()
                swapper.step(on_group_updated=copy_out)
                for p, q in zip(ref_master, model16):
                    self.assertTrue(torch.equal(p.half(), q), f"step {step}")
            state = swapper.state_dict()
            for (k, m), p in zip(sorted(state["master"].items()), ref_master):
                self.assertTrue(torch.equal(m, p), k)

    def test_state_dict_round_trip_and_commit_resume(self):
        ref, mine = shards(self.full), shards(self.full)
        ref_opt = torch.optim.Adam(ref, lr=1e-2)
        with self.swapper(torch.optim.Adam(mine, lr=1e-2)) as swapper:
            for step in range(2):
                for p, q, g in zip(ref, mine, grads(step, ref)):
                    p.grad, q.grad = g.clone(), g.clone()
                ref_opt.step()
                swapper.step()
            saved = swapper.state_dict()
            epoch = swapper.commit({"step": 2, "note": "two steps"})
            self.assertEqual(epoch, 0)
            # Overwrite the state with zeros, then load the saved one back.
            zero = {"group_numels": NUMELS, "master": {k: torch.zeros_like(m) for k, m in saved["master"].items()},
                    "state": {k: {"exp_avg": torch.zeros_like(s["exp_avg"]), "exp_avg_sq": torch.zeros_like(
                        s["exp_avg_sq"]), "step": torch.tensor(0.0)} for k, s in saved["state"].items()}}
            swapper.load_state_dict(zero)
            self.assertTrue(all(float(p.abs().sum()) == 0 for p in mine))
            swapper.load_state_dict(saved)
            self.assertTrue(all(torch.equal(p, q) for p, q in zip(ref, mine)))
        # A new process would start here: fresh parameters, resume from the commit.
        fresh = [torch.full_like(p, float("nan")) for p in ref]
        with OptimizerSwapper.resume(torch.optim.Adam(fresh, lr=1e-2), comm, NUMELS, **self.options) as swapper:
            self.assertEqual(swapper.metadata, {"step": 2, "note": "two steps"})
            self.assertTrue(all(torch.equal(p, q) for p, q in zip(ref, fresh)))
            for step in range(2, 4):
                for p, q, g in zip(ref, fresh, grads(step, ref)):
                    p.grad, q.grad = g.clone(), g.clone()
                ref_opt.step()
                swapper.step()
            self.assertTrue(all(torch.equal(p, q) for p, q in zip(ref, fresh)))

    def test_bad_use_raises_clear_errors(self):
        with self.assertRaisesRegex(swapcoord.ConfigError, "Adam or AdamW, not SGD"):
            self.swapper(torch.optim.SGD(shards(self.full), lr=0.1))
        with self.assertRaisesRegex(swapcoord.ConfigError, "amsgrad"):
            self.swapper(torch.optim.Adam(shards(self.full), amsgrad=True))
        # Every rank gets the lowest failing rank's error.
        with self.assertRaisesRegex(swapcoord.ConfigError, "rank 0 owns a piece of"):
            self.swapper(torch.optim.Adam(shards(self.full)[:1] + [torch.zeros(3)] * 7))
        with self.assertRaisesRegex(swapcoord.ConfigError, "Session option 'root' is not known"):
            OptimizerSwapper(torch.optim.Adam(shards(self.full)), comm, NUMELS, root="/tmp/x")
        # A resume with other groups than the commit's.
        with self.swapper(torch.optim.Adam(shards(self.full))) as swapper:
            swapper.commit({"step": 0})
        with self.assertRaisesRegex(swapcoord.Error, "tensor 'exp_avg.0' covers 5000 of its 5001 elements"):
            other = [n + 1 for n in NUMELS]
            OptimizerSwapper(torch.optim.Adam([torch.zeros(c) for o, c in
                                               (swapcoord.shard_ranges(n, W)[R] for n in other) if c]),
                             comm, other, resume=True, **self.options)


    def test_state_the_optimizer_already_has_is_kept(self):
        ref, mine = shards(self.full), shards(self.full)
        ref_opt, my_opt = torch.optim.Adam(ref, lr=1e-2), torch.optim.Adam(mine, lr=1e-2)
        for step in range(2):  # steps in memory before the swapper takes over
            for p, q, g in zip(ref, mine, grads(step, ref)):
                p.grad, q.grad = g.clone(), g.clone()
            ref_opt.step()
            my_opt.step()
        with self.swapper(my_opt) as swapper:
            for step in range(2, 4):
                for p, q, g in zip(ref, mine, grads(step, ref)):
                    p.grad, q.grad = g.clone(), g.clone()
                ref_opt.step()
                swapper.step()
            self.assertTrue(all(torch.equal(p, q) for p, q in zip(ref, mine)))
            state = swapper.state_dict()
            self.assertTrue(all(float(s["step"]) == 4.0 for s in state["state"].values()))

    def test_a_failed_step_stops_the_swapper_until_resumed(self):
        mine = shards(self.full)
        with self.swapper(torch.optim.Adam(mine, lr=1e-2)) as swapper:
            for p, g in zip(mine, grads(0, mine)):
                p.grad = g
            swapper.commit({"step": 0})

            def fail(k, master):
                raise RuntimeError(f"copy of group {k} failed")
            with self.assertRaisesRegex(RuntimeError, "copy of group"):
                swapper.step(on_group_updated=fail)
            with self.assertRaisesRegex(swapcoord.Error, "a step failed part-way .*resume from the last commit"):
                swapper.step()
            with self.assertRaisesRegex(swapcoord.Error, "a step failed part-way"):
                swapper.commit({"step": 1})  # every rank failed the same way: no rank waits

    def test_a_failure_on_one_rank_is_raised_on_every_rank(self):
        if W < 2:
            self.skipTest("needs 2 ranks")
        # Session creation: only rank 1 names an unknown option.
        options = dict(self.options, overwrite=True)
        if R == 1:
            options["bogus"] = 1
        with self.assertRaisesRegex(swapcoord.ConfigError, "rank 1: Session option 'bogus' is not known"):
            swapcoord.Session.create(comm, {"x": torch.zeros(10)}, **options)
        # A commit: rank 1's parameter was replaced by one of another dtype.
        mine = shards(self.full)
        with self.swapper(torch.optim.Adam(mine, lr=1e-2)) as swapper:
            if R == 1:
                mine[0].data = mine[0].data.double()
            with self.assertRaisesRegex(swapcoord.ConfigError, "rank 1: .*master.0.*float64"):
                swapper.commit({"step": 0})

    def test_load_state_dict_of_another_layout_is_refused(self):
        with self.swapper(torch.optim.Adam(shards(self.full), lr=1e-2)) as swapper:
            state = swapper.state_dict()
            k = next(iter(state["ranges"]))
            offset, count = state["ranges"][k]
            state["ranges"][k] = (offset + 1024, count)
            with self.assertRaisesRegex(swapcoord.ConfigError, f"group {k}: the state is of elements"):
                swapper.load_state_dict(state)

    def test_cuda_only_options_are_refused(self):
        with self.assertRaisesRegex(swapcoord.ConfigError, "capturable=True"):
            self.swapper(torch.optim.Adam(shards(self.full), capturable=True))


class SessionTest(unittest.TestCase):
    def test_a_session_by_name_with_groups_commit_metadata_and_verify(self):
        d = comm.bcast(tempfile.mkdtemp(prefix="swapcoord-session-", dir="/var/tmp") if R == 0 else None)
        try:
            tensors = {"w": torch.zeros(10000), "b": torch.zeros(300, dtype=torch.bfloat16)}
            with swapcoord.Session.create(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"),
                                          policy="round-robin", groups={"layer": ["w", "b"]}) as s:
                self.assertEqual((s.rank, s.world_size), (R, W))
                mine = [n for n in ("w", "b") if s.local_piece(n) is not None]
                values = {n: torch.arange(s.local_piece(n)[1]).to(tensors[n].dtype) for n in mine}
                s.swap_out(mine, [values[n] for n in mine])
                self.assertEqual(s.commit({"step": 3}), 0)
                check = s.verify()
                self.assertEqual((check["pieces"], check["mismatches"]), (2, 0))
                for n in mine:
                    back = torch.empty_like(values[n])
                    s.swap_in(n, back)
                    self.assertTrue(torch.equal(back, values[n]))
                with self.assertRaisesRegex(swapcoord.ConfigError, "no tensor named 'nope'"):
                    s.swap_in("nope", torch.zeros(1))
                if W == 1:
                    with self.assertRaisesRegex(swapcoord.ConfigError, "2 tensors named, 1 given"):
                        s.swap_out("layer", [values["w"]])
                    with self.assertRaisesRegex(ValueError, "10000 elements of float32, the tensor given has 5"):
                        s.swap_out("w", torch.zeros(5))
            with swapcoord.Session.resume(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"),
                                          policy="round-robin") as s:
                self.assertEqual(s.metadata, {"step": 3})
                self.assertEqual(s.resumed_epoch, 0)
            # Too much metadata, or a NUL in it: the commit fails on every rank, naming rank 0.
            with swapcoord.Session.resume(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"),
                                          policy="round-robin") as s:
                with self.assertRaisesRegex(swapcoord.PhaseError, "rank 0.*metadata has 400\\d\\d bytes"):
                    s.commit("x" * 40000)
                s.commit({"a": "\0b"})  # JSON escapes the NUL: it round-trips
            with swapcoord.Session.resume(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"),
                                          policy="round-robin") as s:
                self.assertEqual(s.metadata, {"a": "\0b"})
            # A second create over the committed catalog is refused, naming it.
            with self.assertRaisesRegex(swapcoord.Error, "catalog"):
                swapcoord.Session.create(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"))
        finally:
            comm.Barrier()
            if R == 0:
                shutil.rmtree(d)


    def test_pinned_empty_tensors_move_in_place_and_are_still_checked(self):
        t = swapcoord.pinned_empty((3, 5000), torch.float16)
        self.assertEqual((tuple(t.shape), t.dtype, t.data_ptr() % 4096), ((3, 5000), torch.float16, 0))
        self.assertEqual(swapcoord.pinned_empty(0, torch.float32).numel(), 0)
        with self.assertRaisesRegex(swapcoord.ConfigError, "pinned_empty: shape \\(4, -1\\) has a negative size"):
            swapcoord.pinned_empty((4, -1), torch.float32)
        d = comm.bcast(tempfile.mkdtemp(prefix="swapcoord-session-", dir="/var/tmp") if R == 0 else None)
        try:
            numel = (1 << 20) + 7  # an unaligned tail after the aligned part
            with swapcoord.Session.create(comm, {"x": torch.zeros(numel)}, roots=os.path.join(d, "r"),
                                          catalog_dir=os.path.join(d, "c"), policy="sharded") as s:
                n = s.local_piece("x")[1]
                out = swapcoord.pinned_empty(n, torch.float32)
                out.copy_(torch.arange(n, dtype=torch.float32) * 3 + R)
                s.swap_out("x", out)
                back, plain = swapcoord.pinned_empty(n, torch.float32), torch.zeros(n)
                back.zero_()
                s.swap_in("x", back)
                s.swap_in("x", plain)
                self.assertTrue(torch.equal(back, out))
                self.assertTrue(torch.equal(plain, out))
                path, offset, _ = s.where("x")
                with open(path, "r+b") as f:  # one flipped byte in the aligned part
                    f.seek(offset + 4096)
                    byte = f.read(1)[0]
                    f.seek(offset + 4096)
                    f.write(bytes([byte ^ 0x10]))
                with self.assertRaisesRegex(swapcoord.Error, "tensor 'x'.*checksum"):
                    s.swap_in("x", back)
        finally:
            comm.Barrier()
            if R == 0:
                shutil.rmtree(d)

    def test_memory_of_an_async_call_stays_alive_and_a_dropped_error_is_raised_at_close(self):
        d = comm.bcast(tempfile.mkdtemp(prefix="swapcoord-session-", dir="/var/tmp") if R == 0 else None)
        try:
            tensors = {"big": torch.zeros(16 << 20), "w": torch.zeros(1 << 20)}
            s = swapcoord.Session.create(comm, tensors, roots=os.path.join(d, "r"), catalog_dir=os.path.join(d, "c"),
                                         policy="sharded")
            big = torch.ones(s.local_piece("big")[1])
            w = torch.arange(s.local_piece("w")[1], dtype=torch.float32)
            s.swap_out(["big", "w"], [big, w])
            first = s.swap_out_async("big", big)  # queued ahead: the next call waits behind it
            back = torch.zeros_like(w)
            keep = back.detach()                  # to look at the storage afterwards
            h = s.swap_in_async("w", back)
            back.data = torch.empty(0)            # the caller re-points its tensor meanwhile
            del back
            first.wait()
            h.wait()
            self.assertTrue(torch.equal(keep, w))  # the read landed in the original storage
            # An error of an async call whose handle was dropped comes out of close().
            path, offset, _ = s.where("w")
            os.truncate(path, offset)
            h = s.swap_in_async("w", torch.zeros_like(w))
            del h
            with self.assertRaisesRegex(swapcoord.IoError, "ended first|short"):
                s.close()
            self.assertTrue(s.closed)
        finally:
            comm.Barrier()
            if R == 0:
                shutil.rmtree(d)


if __name__ == "__main__":
    result = unittest.main(verbosity=2 if R == 0 else 0, exit=False).result
    ok = comm.allreduce(0 if result.wasSuccessful() else 1, op=MPI.MAX) == 0
    raise SystemExit(0 if ok else 1)
