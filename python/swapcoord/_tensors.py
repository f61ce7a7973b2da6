"""Turning torch tensors (or anything with the buffer protocol) into (address, bytes) for
the extension, with the checks that make that safe; and page-aligned tensors."""
from . import _swapcoord


def dtype_name(dtype):
    """"float32" for torch.float32 or "float32"."""
    text = str(dtype)
    return text[len("torch."):] if text.startswith("torch.") else text


def tensor_memory(tensor, what, allow_cuda=False):
    """(address, nbytes, dtype name) of a contiguous CPU torch tensor (or CUDA tensor, with
    `allow_cuda`); ValueError naming `what` for anything else."""
    try:
        device = tensor.device
    except AttributeError:
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(tensor).__name__}") from None
    if device.type != "cpu" and not (allow_cuda and device.type == "cuda"):
        raise ValueError(f"{what}: the tensor is on {device}; swapcoord reads and writes CPU tensors "
                         "(copy it to a pinned CPU tensor first)")
    if not tensor.is_contiguous():
        raise ValueError(f"{what}: the tensor is not contiguous (shape {tuple(tensor.shape)}, "
                         f"stride {tensor.stride()}); pass tensor.contiguous()")
    return tensor.data_ptr(), tensor.numel() * tensor.element_size(), dtype_name(tensor.dtype)


def device_index(tensor):
    """-1 for a CPU tensor; for a CUDA tensor its device index, after waiting for the work
    queued on its device's current stream (the session copies on a stream of its own, so
    what PyTorch has queued that writes or reads the tensor must be done first)."""
    if tensor.device.type != "cuda":
        return -1
    import torch

    torch.cuda.current_stream(tensor.device).synchronize()
    return tensor.device.index


def pinned_empty(shape, dtype, what="pinned_empty"):
    """An uninitialised CPU tensor in page-aligned memory (huge pages where it is large
    enough; locked where RLIMIT_MEMLOCK allows, else unlocked with one warning): the
    memory a session reads and writes in place, with no staging copy."""
    import torch

    shape = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise _swapcoord.ConfigError(f"{what}: shape {shape} has a negative size")
    numel = 1
    for n in shape:
        numel *= n
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    try:
        memory = _swapcoord.PinnedBuffer(nbytes)
    except _swapcoord.Error as error:
        raise MemoryError(f"{what}: {nbytes} bytes for shape {shape} of {dtype}: {error}") from None
    return torch.frombuffer(memory, dtype=dtype, count=numel).view(shape)
