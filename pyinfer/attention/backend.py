"""The interface an attention backend offers the attention layer (torch_backend.py for the CPU and
reference, triton_backend.py for the GPU); the model runner picks one per device."""

from __future__ import annotations

from typing import Protocol

import torch

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding


class AttentionBackend(Protocol):
    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: RopeInputs,
        rotary: RotaryEmbedding,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """q [T, Hq, D] and k/v [T, Hk, D], not yet rotated, for this step's tokens: rotate q and k,
        write k/v into this layer's `kv_cache` at `meta.slot_mapping`, and return the attention of every
        query over its sequence's cached keys and values, [T, Hq, D]."""
        ...
