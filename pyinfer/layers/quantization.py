"""Weight-only int4 linears on the CPU (torch's packed int4 kernel, groups of 32 along the input)."""

from __future__ import annotations

from typing import NamedTuple

import torch

GROUP_SIZE = 32


class Int4Shard(NamedTuple):
    """A block-quantized matrix as stored: w = (q - 8) * scale + zero, per group of 32 inputs."""

    q: torch.Tensor  # [N, K] uint8 in 0..15
    scale: torch.Tensor  # [N, K / 32] float32
    zero: torch.Tensor  # [N, K / 32] float32


class Int4Weights:
    """Packed int4 weights and their per-group scales and zeros, ready for the CPU kernel."""

    def __init__(self, shard: Int4Shard, dtype: torch.dtype):
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(shard.q.to(torch.int32), 1)
        # [K / 32, N, 2] in the activations' dtype, as the kernel wants
        self.scales_and_zeros = torch.stack([shard.scale.T, shard.zero.T], dim=-1).to(dtype).contiguous()
        self.out_features = shard.q.shape[0]

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP_SIZE, self.scales_and_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)


def empty_int4_shard(out_features: int, in_features: int) -> Int4Shard:
    """Staging buffers with a weight's layout, filled shard by shard by the linear's weight_loader."""
    groups = in_features // GROUP_SIZE
    return Int4Shard(
        torch.zeros(out_features, in_features, dtype=torch.uint8),
        torch.zeros(out_features, groups),
        torch.zeros(out_features, groups),
    )
