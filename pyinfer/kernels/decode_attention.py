"""Paged decode attention (one query token per sequence), GQA-aware, split over the KV length.

Stage 1: program (sequence, KV head, split) loads each K/V tile once for all the query heads that
share it, and keeps an online softmax over its share of the context. Stage 2 merges the splits by
their log-sum-exp; with one split (large batches fill the GPU without splitting) stage 1 writes the
output itself and stage 2 is skipped. The number of splits is fixed per launch, so the kernel is
CUDA-graph safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from pyinfer.kernels import MAX_SPLITS, dot_precision, use_pdl
from pyinfer.kernels.attend_tiles import attend_tiles


# the block table's width changes every step: one compiled variant for all of them
@triton.jit(do_not_specialize=["table_stride"])
def _decode_split_kernel(
    q_ptr,
    cache_ptr,
    tables_ptr,
    seq_lens_ptr,
    out_ptr,
    lse_ptr,
    scale,
    q_stride,
    table_stride,
    v_offset,
    out_stride,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    num_splits,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DIRECT: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HEAD_DIM)
    head_mask = h < GROUP
    heads = kv_head * GROUP + h
    q = tl.load(
        q_ptr + seq * q_stride + heads[:, None] * HEAD_DIM + d[None, :], mask=head_mask[:, None], other=0.0
    )

    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
    q_pos = tl.zeros([BLOCK_H], tl.int64) + seq_len - 1  # the one query sits after every cached key
    qk_scale = scale * 1.4426950408889634  # softmax in base 2
    m, denom, acc = attend_tiles(
        q,
        m,
        denom,
        acc,
        cache_ptr,
        tables_ptr,
        seq,
        kv_head,
        q_pos,
        start,
        end,
        qk_scale,
        table_stride,
        v_offset,
        NUM_KV_HEADS,
        HEAD_DIM,
        PAGE,
        BLOCK_N,
        True,
        DOT_PRECISION,
    )

    has_work = end > start
    out = tl.where(has_work, acc / tl.where(denom > 0, denom, 1.0)[:, None], 0.0)
    if DIRECT:  # the only split: this is the attention output
        dst = out_ptr + seq * out_stride + heads[:, None] * HEAD_DIM + d[None, :]
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=head_mask[:, None])
    else:
        lse = tl.where(has_work, m + tl.log2(tl.where(denom > 0, denom, 1.0)), float("-inf"))  # base 2
        base = (seq * NUM_KV_HEADS * GROUP + heads) * num_splits + split
        tl.store(out_ptr + base[:, None] * HEAD_DIM + d[None, :], out, mask=head_mask[:, None])
        tl.store(lse_ptr + base, lse, mask=head_mask)


@triton.jit
def _merge_splits_kernel(
    part_ptr,
    lse_ptr,
    out_ptr,
    out_stride,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    num_splits,
    BLOCK_S: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, HEAD_DIM)
    base = (seq * NUM_HEADS + head) * num_splits
    lse = tl.load(lse_ptr + base + s, mask=s < num_splits, other=float("-inf"))
    top = tl.max(lse, 0)
    w = tl.where(lse > float("-inf"), tl.exp2(lse - top), 0.0)
    part = tl.load(
        part_ptr + (base + s)[:, None] * HEAD_DIM + d[None, :], mask=(s < num_splits)[:, None], other=0.0
    )
    total = tl.sum(w, 0)
    out = tl.sum(part * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * out_stride + head * HEAD_DIM + d, out.to(out_ptr.dtype.element_ty))


def decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    num_splits: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [B, Hq, D] -> [B, Hq, D], attending to seq_lens[b] cached tokens of each sequence."""
    assert 1 <= num_splits <= MAX_SPLITS
    batch, num_heads, head_dim = q.shape
    _, _, page, num_kv_heads, _ = kv_cache.shape
    group = num_heads // num_kv_heads
    out = torch.empty_like(q) if out is None else out
    direct = num_splits == 1
    part = (
        out
        if direct
        else torch.empty(batch, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
    )
    lse = out if direct else torch.empty(batch, num_heads, num_splits, dtype=torch.float32, device=q.device)
    pdl = use_pdl(q)
    _decode_split_kernel[(batch, num_kv_heads, num_splits)](
        q,
        kv_cache,
        block_tables,
        seq_lens,
        part,
        lse,
        scale,
        q.stride(0),
        block_tables.stride(0),
        kv_cache[0].numel(),
        out.stride(0),
        num_splits=num_splits,
        NUM_KV_HEADS=num_kv_heads,
        GROUP=group,
        HEAD_DIM=head_dim,
        PAGE=page,
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        BLOCK_N=64,
        DOT_PRECISION=dot_precision(q.dtype),
        DIRECT=direct,
        USE_PDL=pdl,
        launch_pdl=pdl,
    )
    if not direct:
        _merge_splits_kernel[(batch, num_heads)](
            part,
            lse,
            out,
            out.stride(0),
            num_splits=num_splits,
            NUM_HEADS=num_heads,
            HEAD_DIM=head_dim,
            BLOCK_S=MAX_SPLITS,
            USE_PDL=pdl,
            launch_pdl=pdl,
        )
    return out
