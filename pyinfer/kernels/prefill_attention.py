"""Paged prefill / extend attention: variable-length query chunks, causal, over a cached prefix.

Sequence b's queries are rows query_start[b]..query_start[b+1] of q and sit at the last positions
of its seq_lens[b] tokens; all keys and values (the cached prefix and this chunk, already stored)
are read from the paged cache through the block table. One program per (sequence, head, query tile).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pyinfer.kernels import dot_precision
from pyinfer.kernels.attend_tiles import LOG2E, attend_tiles


# The block table's width changes every step, and the tables, starts and lengths are views at an
# offset (past the step's decodes) whose alignment changes too: one compiled variant for all of them.
@triton.jit(do_not_specialize=["tables_ptr", "query_start_ptr", "seq_lens_ptr", "table_stride"])
def _prefill_kernel(
    q_ptr,
    cache_ptr,
    tables_ptr,
    query_start_ptr,
    seq_lens_ptr,
    out_ptr,
    scale,
    q_stride,
    out_stride,
    table_stride,
    v_offset,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Axis 0 walks query tiles, last (longest) first, so that the heavy programs start early.
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context = seq_len - q_len
    kv_head = head // GROUP

    m_offs = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = m_offs < q_len
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        q_ptr + (q_start + m_offs)[:, None] * q_stride + head * HEAD_DIM + d[None, :],
        mask=m_mask[:, None],
        other=0.0,
    )
    q_pos = context + m_offs
    qk_scale = scale * LOG2E

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Keys before this tile's first query are visible to all its rows: no mask needed there.
    unmasked_end = (context + tile * BLOCK_M) // BLOCK_N * BLOCK_N
    end = tl.minimum(seq_len, context + (tile + 1) * BLOCK_M)  # causal: later keys are never seen
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
        0,
        unmasked_end,
        qk_scale,
        table_stride,
        v_offset,
        NUM_KV_HEADS,
        HEAD_DIM,
        PAGE,
        BLOCK_N,
        False,
        DOT_PRECISION,
    )
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
        unmasked_end,
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
    out = acc / tl.where(denom > 0, denom, 1.0)[:, None]
    tl.store(
        out_ptr + (q_start + m_offs)[:, None] * out_stride + head * HEAD_DIM + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None],
    )


def prefill_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start: torch.Tensor,
    seq_lens: torch.Tensor,
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """q [T, Hq, D] of several sequences' chunks -> [T, Hq, D].
    config: (BLOCK_M, BLOCK_N, num_warps, num_stages), chosen by query length when not given."""
    _, num_heads, head_dim = q.shape
    _, _, page, num_kv_heads, _ = kv_cache.shape
    out = torch.empty_like(q) if out is None else out
    block_m, block_n, warps, stages = config or launch_config(max_query_len)
    grid = (triton.cdiv(max_query_len, block_m), num_heads, seq_lens.shape[0])
    _prefill_kernel[grid](
        q,
        kv_cache,
        block_tables,
        query_start,
        seq_lens,
        out,
        scale,
        q.stride(0),
        out.stride(0),
        block_tables.stride(0),
        kv_cache[0].numel(),
        NUM_KV_HEADS=num_kv_heads,
        GROUP=num_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        PAGE=page,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        DOT_PRECISION=dot_precision(q.dtype),
        num_warps=warps,
        num_stages=stages,
    )
    return out


def launch_config(max_query_len: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) by measurement on the H100 (bench/gpu/prefill_tune.py)."""
    return (64, 64, 4, 2) if max_query_len > 32 else (16, 64, 4, 2)
