"""The interface an attention backend offers the attention layer (torch_backend.py for the CPU and
reference, triton_backend.py for the GPU); the model runner picks one per device."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding


class AttentionBackend(Protocol):
    name: str

    @staticmethod
    def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple:
        """The shape of one layer's paged KV cache in this backend's layout."""
        ...

    def build_metadata(self, **common: Any) -> AttentionMetadata:
        """The step's metadata: AttentionMetadata's fields (`common`) and this backend's own, in this
        backend's dataclass (built once a step, read by every layer)."""
        ...

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
