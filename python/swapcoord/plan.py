"""The partitioner without MPI: which rank owns which elements of which tensor.

The same function (the C++ make_plan) that a Session uses, so that a program can lay out
its data (e.g. the ZeRO-1 shards of a flat parameter vector) before or without a session,
and get exactly what the session will give each rank.
"""
from ._swapcoord import default_alignment_bytes, plan_pieces as _plan_pieces

from ._tensors import dtype_name


def plan_pieces(tensors, world_size, policy="sharded", alignment_bytes=default_alignment_bytes):
    """Every piece of `tensors` ((name, shape, dtype) triples; dtype a torch.dtype or a
    name such as "float32") for a job of `world_size` ranks, as a list of
    (tensor, shard, owner, element_offset, numel)."""
    specs = [(name, [int(d) for d in shape], dtype_name(dtype)) for name, shape, dtype in tensors]
    return _plan_pieces(specs, int(world_size), policy, int(alignment_bytes))


def shard_ranges(numel, world_size, element_size=4, alignment_bytes=default_alignment_bytes):
    """The sharded policy's cut of one tensor of `numel` elements of `element_size` bytes:
    a list of world_size (element_offset, count) pairs, count 0 for a rank that owns none.
    Shards are align_up(ceil(numel / world_size), alignment in elements) long."""
    dtype = {1: "uint8", 2: "float16", 4: "float32", 8: "float64"}.get(int(element_size))
    if dtype is None:
        raise ValueError(f"shard_ranges: element_size {element_size} is not 1, 2, 4 or 8")
    ranges = [(0, 0)] * int(world_size)
    for _tensor, _shard, owner, offset, count in _plan_pieces(
            [("t", [int(numel)], dtype)], int(world_size), "sharded", int(alignment_bytes)):
        ranges[owner] = (offset, count)
    return ranges
