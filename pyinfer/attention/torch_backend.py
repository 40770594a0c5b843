"""Reference attention over the paged KV cache in plain PyTorch; runs on any device.

Its cache is laid out head-major, [2, Hk, num_blocks, block_size, D]: on the CPU the C++ paged kernel
(pyinfer/csrc) reads each head's pages in place for every row of a step, a prompt row as a decode over
the keys up to its own; elsewhere, or without a compiler, a decode step copies whole pages per head
straight into the layout the batched matmuls read, and prompt chunks attend causally in blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding

# Query rows a prefill attends with at once: small enough to keep a block's scores in cache, large
# enough to amortize each pass over the keys; 128 was the fastest of 64-512 and of the whole square
# (`python bench/cpu/prefill_step.py 2048 0 64 128 256 512`, bench/results/2026-11-30-cpu-avx2-integer-kernels.md).
CAUSAL_BLOCK = 128


def store_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write new keys/values [T, Hk, D] into their slots of a [2, Hk, num_blocks, block_size, D] cache."""
    if kv_cache.device.type == "cpu" and (ops := cpu_ops()) is not None:
        ops.store_kv(kv_cache, k, v, slot_mapping)
        return
    num_kv_heads, head_dim = kv_cache.shape[1], kv_cache.shape[-1]
    slots = kv_cache.view(2, num_kv_heads, -1, head_dim)
    slots[0].index_copy_(1, slot_mapping, k.transpose(0, 1).to(kv_cache.dtype))
    slots[1].index_copy_(1, slot_mapping, v.transpose(0, 1).to(kv_cache.dtype))


@dataclass
class TorchAttentionMetadata(AttentionMetadata):
    # where the decodes run as batched matmuls: their pages and mask, built once for every layer
    decode_pages: tuple[torch.Tensor, torch.Tensor] | None = None
    # where the C++ kernel runs a step with prefill rows: each row's block table and visible keys
    row_pages: tuple[torch.Tensor, torch.Tensor] | None = None


class TorchAttentionBackend:
    name = "torch"

    def __init__(self, head_dim: int, device: torch.device):
        # the C++ paged kernel reads the pages in place for every row, where it is built, for its head sizes
        self.cpp_kernel = device.type == "cpu" and head_dim in (64, 128) and cpu_ops() is not None

    def build_metadata(self, **common: Any) -> TorchAttentionMetadata:
        meta = TorchAttentionMetadata(**common)
        if meta.num_decodes and not self.cpp_kernel:
            meta.decode_pages = decode_blocks_and_mask(meta)
        if self.cpp_kernel and meta.num_decodes < meta.num_seqs:
            meta.row_pages = rows_as_decodes(meta)
        return meta

    @staticmethod
    def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple:
        return (2, num_kv_heads, num_blocks, block_size, head_dim)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: RopeInputs,
        rotary: RotaryEmbedding,
        kv_cache: torch.Tensor,
        meta: TorchAttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hk, D] for this step's tokens -> attention output [T, Hq, D]."""
        q, k = rotary(rope, q, k)
        store_kv(kv_cache, k, v, meta.slot_mapping)
        if self.cpp_kernel:  # every row, prefill rows too, as a decode over the pages it sees
            tables, lens = meta.row_pages or (meta.block_tables, meta.seq_lens)
            return cpu_ops().decode_attention(q, kv_cache, tables, lens, scale)
        outputs = []
        nd = meta.num_decodes
        if nd:
            outputs.append(batched_decode(q[:nd], kv_cache, meta.decode_pages, scale))
        start = nd
        for i in range(nd, meta.num_seqs):
            qlen, seq_len = meta.query_lens[i], meta.seq_lens_host[i]
            end = start + qlen
            if qlen == seq_len:  # nothing cached before this chunk: attend to the fresh k/v, as cached
                keys, values = (
                    as_cached(k[start:end], kv_cache.dtype),
                    as_cached(v[start:end], kv_cache.dtype),
                )
            else:
                keys, values = gather_kv(kv_cache, meta.block_tables[i], seq_len, meta.block_size, q.dtype)
            outputs.append(causal_attention(q[start:end], keys, values, scale))
            start = end
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def batched_decode(
    q: torch.Tensor, kv_cache: torch.Tensor, pages: tuple[torch.Tensor, torch.Tensor], scale: float
) -> torch.Tensor:
    """All decodes in two batched fp32 matmuls (SDPA's CPU kernels, and bf16 matmuls, are slow for
    single-token queries), after copying each head's pages into the layout the matmuls read;
    `pages`: decode_blocks_and_mask's."""
    nd, num_heads, head_dim = q.shape
    num_kv_heads = kv_cache.shape[1]
    blocks, mask = pages
    pages = kv_cache.view(2 * num_kv_heads, kv_cache.shape[2], -1)
    kv = pages.index_select(1, blocks).float().view(2, num_kv_heads, nd, -1, head_dim)  # [2, Hk, B, L, D]
    queries = q.view(nd, num_kv_heads, -1, head_dim).transpose(0, 1).float()  # [Hk, B, G, D]
    scores = queries @ kv[0].transpose(-1, -2)  # [Hk, B, G, L]
    probs = torch.add(mask, scores, alpha=scale).softmax(dim=-1)
    out = (probs @ kv[1]).transpose(0, 1)  # [B, Hk, G, D]
    return out.to(q.dtype).reshape(nd, num_heads, head_dim)


def decode_blocks_and_mask(meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """For the decodes of a step: their pages [B * num_blocks] in order, and an additive fp32 mask
    [B, 1, L] hiding the positions past each sequence's length. Built once, used by every layer."""
    nd = meta.num_decodes
    num_blocks = -(-max(meta.seq_lens_host[:nd]) // meta.block_size)
    blocks = meta.block_tables[:nd, :num_blocks].flatten()
    positions = torch.arange(num_blocks * meta.block_size, device=blocks.device)
    hidden = positions[None, :] >= meta.seq_lens[:nd, None]
    mask = torch.zeros(hidden.shape, dtype=torch.float32, device=blocks.device)
    return blocks, mask.masked_fill_(hidden, -float("inf"))[:, None, :]


def rows_as_decodes(meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query row of a CPU step as a decode of its own, for the C++ kernel: its sequence's block table
    [T, max_blocks], and the keys it sees [T] (a prompt row: those up to its own position). The prompt's
    keys and values are read back from the cache, so they are rounded as a narrower cache holds them."""
    tables = meta.block_tables.repeat_interleave(torch.tensor(meta.query_lens), dim=0)
    # row i of a chunk of n rows that ends the sequence at L sees L - n + i + 1 keys
    lens = [
        torch.arange(end - n + 1, end + 1) for n, end in zip(meta.query_lens, meta.seq_lens_host, strict=True)
    ]
    return tables, torch.cat(lens)


def as_cached(x: torch.Tensor, cache_dtype: torch.dtype) -> torch.Tensor:
    """x rounded as a narrower cache holds it: a prompt attends to the same keys and values whether
    they come fresh or from the cache (a prefix-cache hit, a later chunk)."""
    return x if x.dtype == cache_dtype else x.to(cache_dtype).to(x.dtype)


def gather_kv(
    kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int, block_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's keys and values [L, Hk, D], copied out of its pages in `dtype` (the queries')."""
    blocks = block_table[: (seq_len + block_size - 1) // block_size]
    kv = kv_cache[:, :, blocks].flatten(2, 3)[:, :, :seq_len].to(dtype)  # [2, Hk, L, D]
    return kv[0].transpose(0, 1), kv[1].transpose(0, 1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Queries are the last q.shape[0] positions of the k/v sequence. Taken CAUSAL_BLOCK query rows at
    a time, each block attending only to the keys up to its last row: about half the work of the whole
    square for a long prompt, and score matrices of a block's size."""
    qlen, kvlen = q.shape[0], k.shape[0]
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    cached = kvlen - qlen
    blocks = []
    for start in range(0, qlen, CAUSAL_BLOCK):
        end = min(qlen, start + CAUSAL_BLOCK)
        keys = cached + end
        mask = torch.ones(end - start, keys, dtype=torch.bool, device=q.device).tril(cached + start)
        blocks.append(
            F.scaled_dot_product_attention(
                q[:, start:end], k[:, :keys], v[:, :keys], attn_mask=mask, scale=scale, enable_gqa=True
            )
        )
    out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
    return out.transpose(0, 1)
