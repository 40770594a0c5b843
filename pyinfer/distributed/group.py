"""A tensor-parallel group over torch.distributed (NCCL on GPUs, gloo on the CPU) and the collectives the
model and the model runner use. A group of one rank, SINGLE, runs none of them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParallelGroup:
    """This rank's index, the group's size and this rank's device; collectives over the default group."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None  # where its collectives' tensors live (None: one rank, none run)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks, in place."""
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's x (all the same shape), joined along the last dimension in rank order."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's x, in place on every rank."""
        if self.size > 1:
            dist.broadcast(x, src=0)
        return x

    def min(self, value: int) -> int:
        """The smallest of the ranks' values."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = ParallelGroup()


def init_group(rank: int, size: int, store: dist.TCPStore, device: torch.device) -> ParallelGroup:
    """Joins the group whose TCP store rank 0 holds on this host's loopback."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one host: a container's hostname may not resolve
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timedelta(minutes=10))
    return ParallelGroup(rank, size, device)
