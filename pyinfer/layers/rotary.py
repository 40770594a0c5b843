"""Rotary position embedding (neox/HF half-split layout) with default, linear and llama3 scaling."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pyinfer.kernels import triton_enabled
from pyinfer.kernels.cpu import cpu_ops

# What RotaryEmbedding.prepare hands every layer: positions [T] (Triton or C++ kernel), or (cos, sin) rows
RopeInputs = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / scaling["factor"]).float()
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        low_wavelen, high_wavelen = old_len / low, old_len / high
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        return torch.where(mid, smoothed, out).float()
    if kind == "factors":  # per-frequency divisors, as GGUF files store llama3 scaling
        return (inv_freq / torch.tensor(scaling["factors"], dtype=torch.float64)).float()
    raise ValueError(f"unsupported rope scaling type {kind!r} (supported: default, linear, llama3)")


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: dict[str, Any] | None):
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, scaling)
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        # [max_position, head_dim]: cos in the first half, sin in the second.
        self.register_buffer("cos_sin", torch.cat([freqs.cos(), freqs.sin()], dim=-1), persistent=False)

    def prepare(self, positions: torch.Tensor, dtype: torch.dtype) -> RopeInputs:
        """Once per step, for every layer: the positions themselves for the Triton or C++ kernel, else
        the rows' cos [T, 1, D] and sign-folded sin [T, 1, D] in the activations' dtype."""
        if triton_enabled(positions) or _cpu_kernel(positions):
            return positions
        cos, sin = self.cos_sin[positions].unsqueeze(1).chunk(2, dim=-1)
        return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)

    def forward(
        self, rope: RopeInputs, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [T, Hq, D], k: [T, Hk, D] rotated by what prepare() returned (in place with the C++ kernel).
        The Triton attention backend rotates q and k itself, fused with its KV-cache write."""
        if _cpu_kernel(q):
            cpu_ops().rotary_(rope, q, k, self.cos_sin)
            return q, k
        cos, sin = rope
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _cpu_kernel(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and cpu_ops() is not None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, with rotate_half's negation folded into sin's first half."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)
