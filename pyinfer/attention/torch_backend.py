"""Reference attention over the paged KV cache in plain PyTorch; runs on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pyinfer.attention.metadata import AttentionMetadata


def store_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write new keys/values into their slots; kv_cache is [2, num_blocks, block_size, Hk, D]."""
    num_kv_heads, head_dim = kv_cache.shape[-2:]
    kv_cache[0].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k)
    kv_cache[1].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v)


class TorchAttentionBackend:
    name = "torch"

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hk, D] for this step's tokens -> attention output [T, Hq, D]."""
        store_kv(kv_cache, k, v, meta.slot_mapping)
        outputs = []
        nd = meta.num_decodes
        if nd:
            outputs.append(self._decode(q[:nd], kv_cache, meta, scale))
        start = nd
        for i in range(nd, meta.num_seqs):
            qlen, seq_len = meta.query_lens[i], meta.seq_lens_host[i]
            end = start + qlen
            if qlen == seq_len:  # nothing cached before this chunk: attend to the fresh k/v
                keys, values = k[start:end], v[start:end]
            else:
                keys, values = gather_kv(kv_cache, meta.block_tables[i], seq_len, meta.block_size)
            outputs.append(causal_attention(q[start:end], keys, values, scale))
            start = end
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    @staticmethod
    def _decode(
        q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        """One query token per sequence, all sequences in two batched matmuls (SDPA's CPU kernels are
        slow for single-token queries)."""
        nd, num_heads, head_dim = q.shape
        num_kv_heads = kv_cache.shape[-2]
        max_len = max(meta.seq_lens_host[:nd])
        num_blocks = (max_len + meta.block_size - 1) // meta.block_size
        kv = kv_cache[:, meta.block_tables[:nd, :num_blocks]].flatten(2, 3)  # [2, B, L, Hk, D]
        keys = kv[0].permute(0, 2, 3, 1)  # [B, Hk, D, L]
        values = kv[1].transpose(1, 2)  # [B, Hk, L, D]
        scores = q.view(nd, num_kv_heads, -1, head_dim) @ keys  # [B, Hk, G, L]
        visible = torch.arange(scores.shape[-1], device=q.device) < meta.seq_lens[:nd, None]
        scores = scores.float().mul_(scale).masked_fill_(~visible[:, None, None, :], -float("inf"))
        out = scores.softmax(dim=-1).to(q.dtype) @ values  # [B, Hk, G, D]
        return out.view(nd, num_heads, head_dim)


def gather_kv(
    kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's keys and values [L, Hk, D], copied out of its pages."""
    blocks = block_table[: (seq_len + block_size - 1) // block_size]
    kv = kv_cache[:, blocks].flatten(1, 2)[:, :seq_len]  # [2, L, Hk, D]
    return kv[0], kv[1]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Queries are the last q.shape[0] positions of the k/v sequence."""
    qlen, kvlen = q.shape[0], k.shape[0]
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    if qlen == kvlen:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    else:
        mask = torch.ones(qlen, kvlen, dtype=torch.bool, device=q.device).tril(kvlen - qlen)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(0, 1)
