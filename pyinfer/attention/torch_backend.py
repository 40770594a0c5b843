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
        slow for single-token queries). Each layer copies its cache rows once, head-major, so that the
        matmuls read them without another copy."""
        nd, num_heads, head_dim = q.shape
        num_kv_heads = kv_cache.shape[-2]
        if meta.torch_decode is None:
            meta.torch_decode = decode_rows_and_mask(meta, num_kv_heads)
        rows, mask = meta.torch_decode
        kv = kv_cache.view(2, -1, head_dim).index_select(1, rows).view(2, nd, num_kv_heads, -1, head_dim)
        scores = q.view(nd, num_kv_heads, -1, head_dim) @ kv[0].transpose(-1, -2)  # [B, Hk, G, L]
        probs = torch.add(mask, scores, alpha=scale).softmax(dim=-1).to(q.dtype)
        return (probs @ kv[1]).view(nd, num_heads, head_dim)


def decode_rows_and_mask(meta: AttentionMetadata, num_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For the decodes of a step: the cache rows [B * Hk * L] (as rows of a [-1, D] view) holding each
    sequence's keys head by head, and an additive fp32 mask [B, 1, 1, L] hiding the padding past its length."""
    nd = meta.num_decodes
    seq_lens = meta.seq_lens[:nd]
    positions = torch.arange(max(meta.seq_lens_host[:nd]), device=seq_lens.device)
    blocks = meta.block_tables[:nd, positions // meta.block_size]  # [B, L]
    slots = blocks * meta.block_size + positions % meta.block_size
    heads = torch.arange(num_kv_heads, device=seq_lens.device)
    rows = (slots[:, None, :] * num_kv_heads + heads[None, :, None]).flatten()
    hidden = positions[None, :] >= seq_lens[:, None]
    mask = torch.zeros(hidden.shape, dtype=torch.float32, device=seq_lens.device)
    return rows, mask.masked_fill_(hidden, -float("inf"))[:, None, None, :]


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
