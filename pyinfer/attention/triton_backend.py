"""Attention over the paged KV cache with our Triton kernels (GPU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.kernels import MAX_SPLITS, num_sms
from pyinfer.kernels.decode_attention import decode_attention
from pyinfer.kernels.prefill_attention import prefill_attention
from pyinfer.kernels.rotary_store import rotary_store
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding


@dataclass
class TritonAttentionMetadata(AttentionMetadata):
    decode_splits: int = 1  # KV splits of the decode kernel (fixed per CUDA-graph batch size)


def decode_splits(batch_size: int, num_kv_heads: int, device: torch.device) -> int:
    """Enough KV splits that the decode kernel fills the GPU."""
    return max(1, min(MAX_SPLITS, -(-2 * num_sms(device) // (max(batch_size, 1) * num_kv_heads))))


class TritonAttentionBackend:
    name = "triton"

    def __init__(self, num_kv_heads: int, device: torch.device):
        self.num_kv_heads, self.device = num_kv_heads, device

    def build_metadata(self, **common: Any) -> TritonAttentionMetadata:
        splits = decode_splits(common["num_decodes"], self.num_kv_heads, self.device)
        return TritonAttentionMetadata(**common, decode_splits=splits)

    @staticmethod
    def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple:
        return (2, num_blocks, block_size, num_kv_heads, head_dim)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: RopeInputs,
        rotary: RotaryEmbedding,
        kv_cache: torch.Tensor,
        meta: TritonAttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        assert isinstance(rope, torch.Tensor)  # RotaryEmbedding.prepare gives the Triton path positions
        # rows past the step's tokens (the model runner pads eager steps) are padding: left as they are
        nd, num_tokens = meta.num_decodes, meta.slot_mapping.shape[0]
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        if nd:  # rotary and the KV write fused into the decode kernel
            decode_attention(
                q[:nd],
                k[:nd],
                v[:nd],
                kv_cache,
                meta.block_tables[:nd],
                meta.seq_lens[:nd],
                meta.slot_mapping[:nd],
                rotary.cos_sin,
                scale,
                meta.decode_splits,
                out[:nd],
            )
        if nd < num_tokens:
            q_rotated = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # rows nd:num_tokens filled
            rotary_store(
                rope[nd:num_tokens],
                q[nd:num_tokens],
                k[nd:num_tokens],
                v[nd:num_tokens],
                kv_cache,
                meta.slot_mapping[nd:],
                rotary.cos_sin,
                q_rotated[nd:num_tokens],
            )
            prefill_attention(
                q_rotated,
                kv_cache,
                meta.block_tables[nd:],
                meta.query_start_loc[nd:],
                meta.seq_lens[nd:],
                meta.max_query_len,
                scale,
                out,
            )
        return out
