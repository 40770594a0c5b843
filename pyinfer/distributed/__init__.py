"""Tensor-parallel groups. Today every run is one rank; the linears already ask for their group."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParallelGroup:
    """A tensor-parallel group: this rank's index and the group size (world size 1 until TP lands)."""

    rank: int = 0
    size: int = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        raise NotImplementedError("tensor parallelism is not built yet")


SINGLE = ParallelGroup()
