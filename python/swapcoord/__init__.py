"""swapcoord: tensors swapped between memory and NVMe, coordinated across MPI ranks.

    swapcoord.AioHandle   DeepSpeed's aio_handle (same methods and arguments) on swapcoord's
                          engine; a failed or short transfer raises swapcoord.IoError
    swapcoord.Session     the C++ SwapSession over an mpi4py communicator: tensors by name,
                          swap out / in / prefetch, commit, resume, verify
    swapcoord.torch       OptimizerSwapper: Adam / AdamW state on NVMe around each step()
    swapcoord.pinned_empty(shape, dtype)
                          a CPU tensor in page-aligned (pinned where allowed) memory, which
                          a Session reads and writes in place: no staging copy

Errors: swapcoord.Error (RuntimeError) and its subclasses ConfigError (also ValueError),
IoError (also OSError: errno, .path, .offset), PhaseError (.failed_rank), PhaseTimeout;
each carries the library's message.
"""
from ._swapcoord import (  # noqa: F401
    ConfigError,
    Error,
    IoError,
    PhaseError,
    PhaseTimeout,
    default_alignment_bytes,
    default_backend,
)
from ._tensors import pinned_empty  # noqa: F401
from .aio import AioHandle  # noqa: F401
from .plan import plan_pieces, shard_ranges  # noqa: F401
from .session import Session  # noqa: F401

__all__ = [
    "AioHandle", "Session", "pinned_empty", "plan_pieces", "shard_ranges",
    "Error", "ConfigError", "IoError", "PhaseError", "PhaseTimeout",
]
