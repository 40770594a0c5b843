"""How a model's weights split across the ranks of a group: contiguous ranges of rows or columns, whole
query heads with their KV heads, and vocabulary shards padded to one size."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfer.distributed.group import ParallelGroup

# Weights a 4-bit block holds along its input: an MLP is split across ranks in whole runs of it, so that a
# row-parallel shard never splits a block (and its scale)
WEIGHT_GROUP = 32


def shard_range(total: int, group: ParallelGroup, align: int = 1) -> tuple[int, int]:
    """(start, size) of this rank's contiguous share of `total`, in whole units of `align` (a size the
    weights' 4-bit groups fit), as even as they allow; the last rank takes any remainder."""
    units = total // align
    base, extra = divmod(units, group.size)
    start = (group.rank * base + min(group.rank, extra)) * align
    size = (base + (group.rank < extra)) * align
    if group.rank == group.size - 1:
        size = total - start
    return start, size


@dataclass(frozen=True)
class HeadShard:
    """This rank's query heads and the KV heads they read: q_start.. and kv_start.., by head."""

    q_start: int
    num_heads: int
    kv_start: int
    num_kv_heads: int


def head_shard(num_heads: int, num_kv_heads: int, group: ParallelGroup) -> HeadShard:
    """Attention split by whole KV heads, each with its group of query heads (uneven where the counts do
    not divide, e.g. 3 KV heads over 2 ranks); with fewer KV heads than ranks each rank holds a copy of
    one KV head and a share of its query heads."""
    per_kv = num_heads // num_kv_heads
    if num_kv_heads >= group.size:
        kv_start, kv_count = shard_range(num_kv_heads, group)
        return HeadShard(kv_start * per_kv, kv_count * per_kv, kv_start, kv_count)
    if group.size % num_kv_heads or per_kv % (group.size // num_kv_heads):
        raise ValueError(
            f"{num_heads} query heads over {num_kv_heads} KV heads cannot be split across "
            f"{group.size} ranks: choose a tensor-parallel size that divides the heads evenly"
        )
    ranks_per_kv = group.size // num_kv_heads
    q_per_rank = per_kv // ranks_per_kv
    kv = group.rank // ranks_per_kv
    return HeadShard(kv * per_kv + group.rank % ranks_per_kv * q_per_rank, q_per_rank, kv, 1)


def check_split(num_heads: int, num_kv_heads: int, intermediate_size: int, size: int) -> None:
    """Raises ValueError, before any rank starts, where a model cannot be split across `size` ranks."""
    for rank in range(size):
        head_shard(num_heads, num_kv_heads, ParallelGroup(rank, size))
    if intermediate_size < WEIGHT_GROUP * size:
        raise ValueError(
            f"an MLP of {intermediate_size} cannot be split in groups of {WEIGHT_GROUP} across {size} ranks"
        )


def vocab_shard(vocab_size: int, group: ParallelGroup) -> tuple[int, int]:
    """(start, rows) of this rank's vocabulary shard: every rank holds the same number of rows, so that
    the logits gather in one collective; rows past the vocabulary (the last rank's padding) are zeros."""
    rows = -(-vocab_size // group.size)
    return group.rank * rows, rows
