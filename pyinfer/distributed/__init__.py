"""Tensor parallelism's lower half: the group and its collectives, how weights split across ranks, and
the shared-memory channel on which rank 0 hands each step's plain data to the other ranks."""

from pyinfer.distributed.group import SINGLE, ParallelGroup, init_group
from pyinfer.distributed.partition import (
    WEIGHT_GROUP,
    HeadShard,
    check_split,
    head_shard,
    shard_range,
    vocab_shard,
)

__all__ = [
    "SINGLE",
    "WEIGHT_GROUP",
    "HeadShard",
    "ParallelGroup",
    "check_split",
    "head_shard",
    "init_group",
    "shard_range",
    "vocab_shard",
]
