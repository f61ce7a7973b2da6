"""The partitioner without MPI: which rank owns which elements of which tensor.

The same functions (the C++ make_plan and shard_ranges) that a Session uses, so that a
program can lay out its data (e.g. the ZeRO-1 shards of a flat parameter vector) before or
without a session, and get exactly what the session will give each rank.
"""
from ._swapcoord import default_alignment_bytes, default_shard_threshold
from ._swapcoord import plan_pieces as _plan_pieces, shard_ranges as _shard_ranges

from ._tensors import dtype_name


def plan_pieces(tensors, world_size, policy="sharded", alignment_bytes=default_alignment_bytes,
                shard_threshold=default_shard_threshold):
    """Every piece of `tensors` ((name, shape, dtype) triples; dtype a torch.dtype or a
    name such as "float32") for a job of `world_size` ranks, as a list of
    (tensor, shard, owner, element_offset, numel)."""
    specs = [(name, [int(d) for d in shape], dtype_name(dtype)) for name, shape, dtype in tensors]
    return _plan_pieces(specs, int(world_size), policy, int(alignment_bytes), int(shard_threshold))


def shard_ranges(numel, world_size, element_size=4, alignment_bytes=default_alignment_bytes):
    """The sharded policy's cut of one tensor of `numel` elements of `element_size` bytes
    (a tensor at or above the shard threshold; OptimizerSwapper's sessions use threshold 0,
    so every group is cut this way): a list of world_size (element_offset, count) pairs,
    count 0 for a rank that owns none. Each rank gets floor or ceil of units / world_size
    whole alignment units (README, "Placement policies"); tensors of one size are cut
    alike."""
    if int(element_size) not in (1, 2, 4, 8):
        raise ValueError(f"shard_ranges: element_size {element_size} is not 1, 2, 4 or 8")
    return [tuple(r) for r in _shard_ranges(int(numel), int(element_size), int(world_size), int(alignment_bytes))]
