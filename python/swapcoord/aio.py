"""swapcoord.AioHandle: DeepSpeed's aio_handle interface on swapcoord's engine.

A DeepSpeed user changes one import:

    from deepspeed.ops.op_builder import AsyncIOBuilder
    h = AsyncIOBuilder().load().aio_handle(block_size, queue_depth, single_submit,
                                           overlap_events, intra_op_parallelism)
becomes
    import swapcoord
    h = swapcoord.AioHandle(block_size, queue_depth, single_submit, overlap_events,
                            intra_op_parallelism)

Methods, arguments and return values are DeepSpeed's (0.15 and later, with file_offset):
read / write return 0; pread / pwrite return the number of operations completed (1) when
synchronous and 0 when async; sync_* and async_* are the shorthands; wait() returns how
many queued operations completed. Unlike DeepSpeed, a short or failed transfer raises
swapcoord.IoError (an OSError: errno, .path, .offset, and a message naming them) instead
of returning -1 or asserting, and validate=True raises swapcoord.Error on a difference.

Tensors: contiguous CPU tensors of any dtype; the whole tensor is transferred. Tensors
from new_cpu_locked_tensor are page-aligned and locked, and take the O_DIRECT path; any
other tensor works too (buffered I/O when its address or size is not aligned).
"""
import os

import torch

from . import _swapcoord
from ._tensors import pinned_empty, tensor_memory


class AioHandle:
    def __init__(self, block_size=1024 * 1024, queue_depth=128, single_submit=False, overlap_events=False,
                 intra_op_parallelism=1):
        self._handle = _swapcoord.AioHandle(int(block_size), int(queue_depth), bool(single_submit),
                                            bool(overlap_events), int(intra_op_parallelism))
        self._in_flight = []   # tensors of queued operations, kept alive until wait()
        self._locked = {}      # data_ptr -> PinnedBuffer of new_cpu_locked_tensor

    # -- DeepSpeed's getters --------------------------------------------------------------
    def get_block_size(self):
        return self._handle.block_size

    def get_queue_depth(self):
        return self._handle.queue_depth

    def get_single_submit(self):
        return self._handle.single_submit

    def get_overlap_events(self):
        return self._handle.overlap_events

    def get_intra_op_parallelism(self):
        return self._handle.intra_op_parallelism

    get_thread_count = get_intra_op_parallelism  # DeepSpeed before 0.15

    # -- transfers ------------------------------------------------------------------------
    # Every transfer goes through _transfer: the checks of the common case (a contiguous CPU
    # tensor, a str path, an offset >= 0) are a few attribute reads, and a synchronous call
    # with nothing queued is one call into the extension (bench/python_bench.py aio).
    def read(self, buffer, filename, validate, file_offset=0):
        """Synchronous read of buffer.nbytes bytes of `filename` at file_offset. Returns 0."""
        self._transfer(True, buffer, filename, validate, False, file_offset, "read")
        return 0

    def write(self, buffer, filename, validate, file_offset=0):
        """Synchronous write of the whole buffer to `filename` at file_offset (the file is
        created when missing, never truncated). Returns 0."""
        self._transfer(False, buffer, filename, validate, False, file_offset, "write")
        return 0

    def pread(self, buffer, filename, validate, async_op, file_offset=0):
        """Parallel read. async_op: queue it (returns 0; wait() completes it); otherwise
        returns the number of operations completed."""
        return self._transfer(True, buffer, filename, validate, async_op, file_offset, "pread")

    def pwrite(self, buffer, filename, validate, async_op, file_offset=0):
        """Parallel write; see pread."""
        return self._transfer(False, buffer, filename, validate, async_op, file_offset, "pwrite")

    def sync_pread(self, buffer, filename, file_offset=0):
        return self._transfer(True, buffer, filename, False, False, file_offset, "sync_pread")

    def sync_pwrite(self, buffer, filename, file_offset=0):
        return self._transfer(False, buffer, filename, False, False, file_offset, "sync_pwrite")

    def async_pread(self, buffer, filename, file_offset=0):
        return self._transfer(True, buffer, filename, False, True, file_offset, "async_pread")

    def async_pwrite(self, buffer, filename, file_offset=0):
        return self._transfer(False, buffer, filename, False, True, file_offset, "async_pwrite")

    def wait(self):
        """Waits for every queued operation; returns how many completed. When one failed,
        all are still waited for and the first failure is raised."""
        try:
            return self._handle.wait()
        finally:
            self._in_flight.clear()

    def _transfer(self, is_read, buffer, filename, validate, async_op, file_offset, call):
        try:
            fast = buffer.is_cpu and buffer.is_contiguous()
        except AttributeError:
            fast = False
        if not fast:  # raises the error that names the problem
            tensor_memory(buffer, f"aio_handle {call} of '{filename}'")
        path = filename if type(filename) is str else os.fspath(filename)
        if file_offset < 0:
            raise _swapcoord.ConfigError(f"aio_handle {call}: file_offset {file_offset} of '{path}' is negative")
        address, nbytes = buffer.data_ptr(), buffer.numel() * buffer.element_size()
        try:
            if not async_op and not self._in_flight:
                # Synchronous with nothing queued: one call into the extension.
                (self._handle.read if is_read else self._handle.write)(address, nbytes, path, file_offset, validate)
                return 1
            (self._handle.submit_read if is_read else self._handle.submit_write)(address, nbytes, path, file_offset,
                                                                                 validate)
        except _swapcoord.IoError as error:
            if error.path is None:  # an open that failed: name the file
                error.path = path
            raise
        self._in_flight.append(buffer.detach())  # the storage, even if `buffer` is re-pointed
        if async_op:
            return 0
        return self.wait()

    def close_files(self):
        """Closes the files the handle keeps open between calls (not DeepSpeed's)."""
        self._handle.close_files()

    # -- pinned tensors -------------------------------------------------------------------
    def new_cpu_locked_tensor(self, num_elem, example_tensor):
        """A CPU tensor of num_elem elements of example_tensor's dtype in page-aligned,
        page-locked memory (mlock; unlocked with a warning when RLIMIT_MEMLOCK is too low)."""
        tensor = pinned_empty(int(num_elem), example_tensor.dtype, "new_cpu_locked_tensor")
        if tensor.numel():
            self._locked[tensor.data_ptr()] = tensor
        return tensor

    def free_cpu_locked_tensor(self, tensor):
        """Forgets a tensor of new_cpu_locked_tensor; its memory goes when the tensor does.
        Returns False for a tensor this handle did not make (as DeepSpeed does)."""
        return self._locked.pop(tensor.data_ptr(), None) is not None
