"""Attention layer: hands q/k/v (not yet rotated) and its own slice of the paged KV cache to the chosen
backend, which applies the rotary embedding, writes k/v into the cache and attends."""

from __future__ import annotations

import torch
from torch import nn

from pyinfer.attention.backend import AttentionBackend
from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, rotary: RotaryEmbedding):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rotary = rotary
        self.scale = head_dim**-0.5
        self.kv_cache = torch.empty(0)  # laid out as the backend wants, set by the model runner
        self.backend: AttentionBackend | None = None  # the model runner's choice for its device

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: RopeInputs, meta: AttentionMetadata
    ) -> torch.Tensor:
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        assert self.backend is not None, "the model runner sets the backend before the first step"
        out = self.backend.forward(q, k, v, rope, self.rotary, self.kv_cache, meta, self.scale)
        return out.reshape(-1, self.num_heads * self.head_dim)
