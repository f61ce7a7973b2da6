"""Turning torch tensors (or anything with the buffer protocol) into (address, bytes) for
the extension, with the checks that make that safe."""


def dtype_name(dtype):
    """"float32" for torch.float32 or "float32"."""
    text = str(dtype)
    return text[len("torch."):] if text.startswith("torch.") else text


def tensor_memory(tensor, what):
    """(address, nbytes, dtype name) of a contiguous CPU torch tensor; ValueError naming
    `what` for anything else."""
    try:
        device = tensor.device
    except AttributeError:
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(tensor).__name__}") from None
    if device.type != "cpu":
        raise ValueError(f"{what}: the tensor is on {device}; swapcoord reads and writes CPU tensors "
                         "(copy it to a pinned CPU tensor first)")
    if not tensor.is_contiguous():
        raise ValueError(f"{what}: the tensor is not contiguous (shape {tuple(tensor.shape)}, "
                         f"stride {tensor.stride()}); pass tensor.contiguous()")
    return tensor.data_ptr(), tensor.numel() * tensor.element_size(), dtype_name(tensor.dtype)
