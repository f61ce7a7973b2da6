"""Turning torch tensors (or anything with the buffer protocol) into (address, bytes) for
the extension, with the checks that make that safe."""


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
