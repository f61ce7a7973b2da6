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
import contextlib

import torch

from . import _swapcoord
from ._tensors import tensor_memory


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
    def read(self, buffer, filename, validate, file_offset=0):
        """Synchronous read of buffer.nbytes bytes of `filename` at file_offset. Returns 0."""
        address, nbytes, _ = tensor_memory(buffer, f"aio_handle read of '{filename}'")
        file_offset = _offset(file_offset, filename)
        with _naming(filename):
            self._handle.read(address, nbytes, str(filename), int(file_offset), bool(validate))
        return 0

    def write(self, buffer, filename, validate, file_offset=0):
        """Synchronous write of the whole buffer to `filename` at file_offset (the file is
        created when missing, never truncated). Returns 0."""
        address, nbytes, _ = tensor_memory(buffer, f"aio_handle write of '{filename}'")
        file_offset = _offset(file_offset, filename)
        with _naming(filename):
            self._handle.write(address, nbytes, str(filename), int(file_offset), bool(validate))
        return 0

    def pread(self, buffer, filename, validate, async_op, file_offset=0):
        """Parallel read. async_op: queue it (returns 0; wait() completes it); otherwise
        returns the number of operations completed."""
        return self._submit(True, buffer, filename, validate, async_op, file_offset)

    def pwrite(self, buffer, filename, validate, async_op, file_offset=0):
        """Parallel write; see pread."""
        return self._submit(False, buffer, filename, validate, async_op, file_offset)

    def sync_pread(self, buffer, filename, file_offset=0):
        return self.pread(buffer, filename, False, False, file_offset)

    def sync_pwrite(self, buffer, filename, file_offset=0):
        return self.pwrite(buffer, filename, False, False, file_offset)

    def async_pread(self, buffer, filename, file_offset=0):
        return self.pread(buffer, filename, False, True, file_offset)

    def async_pwrite(self, buffer, filename, file_offset=0):
        return self.pwrite(buffer, filename, False, True, file_offset)

    def wait(self):
        """Waits for every queued operation; returns how many completed. When one failed,
        all are still waited for and the first failure is raised."""
        try:
            return self._handle.wait()
        finally:
            self._in_flight.clear()

    def _submit(self, is_read, buffer, filename, validate, async_op, file_offset):
        what = f"aio_handle {'pread' if is_read else 'pwrite'} of '{filename}'"
        address, nbytes, _ = tensor_memory(buffer, what)
        file_offset = _offset(file_offset, filename)
        with _naming(filename):
            if not async_op and not self._in_flight:
                # Synchronous with nothing queued: one call into the extension.
                (self._handle.read if is_read else self._handle.write)(address, nbytes, str(filename),
                                                                       int(file_offset), bool(validate))
                return 1
            (self._handle.submit_read if is_read else self._handle.submit_write)(address, nbytes, str(filename),
                                                                                 int(file_offset), bool(validate))
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
        dtype = example_tensor.dtype
        element_size = torch.empty((), dtype=dtype).element_size()
        num_elem = int(num_elem)
        if num_elem < 0:
            raise _swapcoord.ConfigError(f"new_cpu_locked_tensor: num_elem {num_elem} is negative")
        if num_elem == 0:
            return torch.empty(0, dtype=dtype)
        try:
            memory = _swapcoord.PinnedBuffer(num_elem * element_size)
        except _swapcoord.IoError as error:
            raise MemoryError(f"new_cpu_locked_tensor of {num_elem} elements ({num_elem * element_size} bytes): "
                              f"{error}") from None
        tensor = torch.frombuffer(memory, dtype=dtype, count=num_elem)
        self._locked[tensor.data_ptr()] = memory
        return tensor

    def free_cpu_locked_tensor(self, tensor):
        """Forgets a tensor of new_cpu_locked_tensor; its memory goes when the tensor does.
        Returns False for a tensor this handle did not make (as DeepSpeed does)."""
        return self._locked.pop(tensor.data_ptr(), None) is not None



@contextlib.contextmanager
def _naming(filename):
    """Sets .path of an IoError raised before the transfer (an open that failed)."""
    try:
        yield
    except _swapcoord.IoError as e:
        if e.path is None:
            e.path = str(filename)
        raise


def _offset(file_offset, filename):
    offset = int(file_offset)
    if offset < 0:
        raise _swapcoord.ConfigError(f"aio_handle: file_offset {offset} of '{filename}' is negative")
    return offset
