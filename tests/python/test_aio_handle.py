"""swapcoord.AioHandle against DeepSpeed's documented aio_handle behaviour (ctest label
python): constructor knobs and getters, writes then reads at offsets, async calls counted
by wait(), validation, locked tensors; and where swapcoord differs on purpose: a short or
failed transfer raises IoError naming file, offset and errno."""
import errno
import gc
import os
import shutil
import tempfile
import unittest

import torch

import swapcoord

MiB = 1 << 20


class HandleCase(unittest.TestCase):
    """A handle and a scratch directory (on the real disk) per test."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="swapcoord-aio-", dir=os.environ.get("SWAPCOORD_TEST_DIR", "/var/tmp"))
        self.path = os.path.join(self.dir, "t.bin")
        self.h = swapcoord.AioHandle(MiB, 32, False, True, 2)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def pattern(self, nbytes, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)


class AioHandleTest(HandleCase):
    def test_defaults_and_getters_are_deepspeeds(self):
        d = swapcoord.AioHandle()
        self.assertEqual((d.get_block_size(), d.get_queue_depth(), d.get_single_submit(), d.get_overlap_events(),
                          d.get_intra_op_parallelism()), (MiB, 128, False, False, 1))
        h = swapcoord.AioHandle(block_size=256 * 1024, queue_depth=8, single_submit=True, overlap_events=True,
                                intra_op_parallelism=4)
        self.assertEqual((h.get_block_size(), h.get_queue_depth(), h.get_single_submit(), h.get_overlap_events(),
                          h.get_intra_op_parallelism()), (256 * 1024, 8, True, True, 4))

    def test_bad_knobs_raise_config_error_naming_the_key(self):
        with self.assertRaisesRegex(swapcoord.ConfigError, "queue_depth"):
            swapcoord.AioHandle(MiB, 0, False, False, 1)
        with self.assertRaisesRegex(ValueError, "block_size"):
            swapcoord.AioHandle(1000, 8, False, False, 1)

    def test_write_then_read_at_offsets(self):
        a = self.h.new_cpu_locked_tensor(4 * MiB, torch.empty(0, dtype=torch.uint8))
        b = self.h.new_cpu_locked_tensor(2 * MiB, torch.empty(0, dtype=torch.uint8))
        a.copy_(self.pattern(4 * MiB, 1))
        b.copy_(self.pattern(2 * MiB, 2))
        self.assertEqual(self.h.sync_pwrite(a, self.path), 1)          # sync: operations completed
        self.assertEqual(self.h.sync_pwrite(b, self.path, 4 * MiB), 1)
        self.assertEqual(os.path.getsize(self.path), 6 * MiB)
        out = torch.zeros(2 * MiB, dtype=torch.uint8)
        self.assertEqual(self.h.sync_pread(out, self.path, 4 * MiB), 1)
        self.assertTrue(torch.equal(out, b))
        self.assertEqual(self.h.read(out, self.path, False, MiB), 0)   # read / write return 0
        self.assertTrue(torch.equal(out, a[MiB:3 * MiB]))
        whole = torch.zeros(6 * MiB, dtype=torch.uint8)
        self.assertEqual(self.h.pread(whole, self.path, True, False, 0), 1)
        self.assertTrue(torch.equal(whole, torch.cat([a, b])))

    def test_a_write_never_truncates_and_creates_a_missing_file(self):
        first = self.pattern(8192, 3)
        self.assertEqual(self.h.write(first, self.path, True), 0)
        second = self.pattern(4096, 4)
        self.h.write(second, self.path, True, 4096)
        self.assertEqual(os.path.getsize(self.path), 8192)
        with open(self.path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:4096], bytes(first[:4096].numpy()))
        self.assertEqual(data[4096:], bytes(second.numpy()))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_async_calls_are_counted_by_wait(self):
        tensors = [self.pattern(MiB, 10 + i) for i in range(3)]
        for i, t in enumerate(tensors):
            self.assertEqual(self.h.async_pwrite(t, self.path, i * MiB), 0)
        self.assertEqual(self.h.wait(), 3)
        outs = [torch.zeros(MiB, dtype=torch.uint8) for _ in range(3)]
        for i, t in enumerate(outs):
            self.assertEqual(self.h.async_pread(t, self.path, i * MiB), 0)
        self.assertEqual(self.h.pread(torch.zeros(16, dtype=torch.uint8), self.path, False, True, 5), 0)
        self.assertEqual(self.h.wait(), 4)
        for a, b in zip(tensors, outs):
            self.assertTrue(torch.equal(a, b))
        self.assertEqual(self.h.wait(), 0)  # nothing queued

    def test_any_dtype_size_and_alignment(self):
        # Odd sizes and offsets take the buffered path; the bytes are the same.
        for dtype, n, offset in [(torch.float32, 1000, 12), (torch.float16, 4097, 4096 * 3 + 2), (torch.bfloat16, 1, 1),
                                 (torch.int64, 333333, 8)]:
            src = torch.arange(n).to(dtype)
            self.h.sync_pwrite(src, self.path, offset)
            dst = torch.zeros(n, dtype=dtype)
            self.h.sync_pread(dst, self.path, offset)
            self.assertTrue(torch.equal(src, dst), (dtype, n, offset))

    def test_locked_tensors(self):
        t = self.h.new_cpu_locked_tensor(1000, torch.empty(0, dtype=torch.float16))
        self.assertEqual((t.dtype, t.numel(), t.data_ptr() % 4096), (torch.float16, 1000, 0))
        t.fill_(1.5)
        self.assertTrue(self.h.free_cpu_locked_tensor(t))
        self.assertFalse(self.h.free_cpu_locked_tensor(t))
        self.assertFalse(self.h.free_cpu_locked_tensor(torch.zeros(3)))
        gc.collect()
        self.assertEqual(float(t.sum()), 1500.0)  # the tensor keeps its memory
        h2 = swapcoord.AioHandle()
        u = h2.new_cpu_locked_tensor(10, torch.empty(0))
        del h2
        gc.collect()
        u.fill_(2)
        self.assertEqual(float(u.sum()), 20.0)

    def test_a_read_past_the_end_raises_naming_file_and_offset(self):
        self.h.sync_pwrite(self.pattern(MiB, 5), self.path)
        out = torch.zeros(MiB, dtype=torch.uint8)
        with self.assertRaises(swapcoord.IoError) as caught:
            self.h.sync_pread(out, self.path, 4096)
        e = caught.exception
        self.assertIsInstance(e, OSError)
        self.assertEqual(e.path, self.path)
        self.assertEqual(e.offset, MiB)        # where the file ends
        self.assertIn(self.path, str(e))
        self.assertIn(f"offset {MiB}", str(e))
        self.assertIn("the file ended first", str(e))
        self.assertEqual(self.h.wait(), 0)     # nothing left queued

    def test_a_missing_file_or_a_directory_raises_with_errno(self):
        with self.assertRaises(swapcoord.IoError) as caught:
            self.h.sync_pread(torch.zeros(4), os.path.join(self.dir, "missing.bin"))
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        self.assertEqual(caught.exception.path, os.path.join(self.dir, "missing.bin"))
        with self.assertRaises(OSError) as caught:
            self.h.sync_pwrite(torch.zeros(4), self.dir)
        self.assertIn(self.dir, str(caught.exception))
        self.assertEqual(caught.exception.errno, errno.EISDIR)

    def test_a_symbolic_link_is_not_followed(self):
        target = os.path.join(self.dir, "target.bin")
        with open(target, "wb") as f:
            f.write(b"x" * 4096)
        os.symlink(target, self.path)
        with self.assertRaises(swapcoord.IoError) as caught:
            self.h.sync_pwrite(torch.zeros(4096, dtype=torch.uint8), self.path)
        self.assertEqual(caught.exception.errno, errno.ELOOP)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"x" * 4096)

    def test_tensors_that_cannot_be_transferred_raise_value_error(self):
        with self.assertRaisesRegex(ValueError, "not contiguous"):
            self.h.sync_pwrite(torch.zeros(8, 8).t(), self.path)
        with self.assertRaisesRegex(TypeError, "torch.Tensor"):
            self.h.sync_pwrite(b"bytes", self.path)

    def test_async_failure_is_raised_by_wait_after_the_others_complete(self):
        good = self.pattern(MiB, 6)
        self.h.sync_pwrite(good, self.path)
        out = torch.zeros(MiB, dtype=torch.uint8)
        self.assertEqual(self.h.async_pread(torch.zeros(MiB, dtype=torch.uint8), self.path, MiB), 0)  # past the end
        self.assertEqual(self.h.async_pread(out, self.path), 0)
        with self.assertRaises(swapcoord.IoError) as caught:
            self.h.wait()
        self.assertEqual(caught.exception.offset, MiB)
        self.assertTrue(torch.equal(out, good))  # the other operation completed
        self.assertEqual(self.h.wait(), 0)       # and nothing is left queued


class AioHandleSafetyTest(HandleCase):
    """The handle's kept files, threads and memory lifetimes."""

    def test_a_replaced_file_is_opened_anew(self):
        old = self.pattern(8192, 20)
        self.h.sync_pwrite(old, self.path)
        new_path = self.path + ".new"
        new = self.pattern(8192, 21)
        with open(new_path, "wb") as f:
            f.write(bytes(new.numpy()))
        os.replace(new_path, self.path)        # a writer replaces the file by rename
        out = torch.zeros(8192, dtype=torch.uint8)
        self.h.sync_pread(out, self.path)
        self.assertTrue(torch.equal(out, new))
        self.h.sync_pwrite(old, self.path)     # and writes go to the new file, not the old one
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), bytes(old.numpy()))

    def test_deleted_files_are_not_kept_open(self):
        def deleted():
            fds = os.listdir("/proc/self/fd")
            return [fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")
                    and os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")]
        self.h.sync_pwrite(self.pattern(MiB, 22), self.path)
        os.remove(self.path)
        self.h.sync_pwrite(self.pattern(4096, 23), self.path + ".other")  # the next open drops it
        self.assertEqual(deleted(), [])
        self.h.close_files()
        self.assertFalse(any(os.readlink(f"/proc/self/fd/{fd}").startswith(self.dir)
                             for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")))

    def test_one_handle_shared_by_threads(self):
        import threading
        data = [self.pattern(MiB, 30 + i) for i in range(4)]
        for i, t in enumerate(data):
            self.h.sync_pwrite(t, self.path, i * MiB)
        errors = []

        def worker(i):
            try:
                for _ in range(20):
                    out = torch.zeros(MiB, dtype=torch.uint8)
                    self.h.sync_pread(out, self.path, i * MiB)
                    assert torch.equal(out, data[i])
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_a_queued_read_keeps_its_memory(self):
        self.h.sync_pwrite(self.pattern(4 * MiB, 40), self.path)
        out = torch.zeros(4 * MiB, dtype=torch.uint8)
        keep = out.detach()
        self.h.async_pread(out, self.path)
        out.data = torch.empty(0, dtype=torch.uint8)  # re-pointed while queued
        del out
        self.assertEqual(self.h.wait(), 1)
        self.assertTrue(torch.equal(keep, self.pattern(4 * MiB, 40)))

    def test_a_negative_offset_is_a_config_error(self):
        with self.assertRaisesRegex(swapcoord.ConfigError, "file_offset -1"):
            self.h.sync_pread(torch.zeros(4), self.path, -1)

    def test_oserror_text_says_the_errno_once(self):
        with self.assertRaises(swapcoord.IoError) as caught:
            self.h.sync_pread(torch.zeros(4), os.path.join(self.dir, "missing.bin"))
        self.assertEqual(str(caught.exception).count("No such file or directory"), 1)
        self.assertTrue(str(caught.exception).startswith("[Errno 2] "))


if __name__ == "__main__":
    unittest.main(verbosity=2)
