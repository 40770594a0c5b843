"""Rotary embedding and the KV-cache write in one pass, for prefill rows: q rotated into a new tensor,
k rotated into its cache slot beside v. One program per token; a slot of -1 writes nothing."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pyinfer.kernels.pdl import pdl_args, pdl_wait
from pyinfer.kernels.rotary_tiles import cos_sin_rows, rotated


# The prefill rows' positions and slots start past the step's decodes, at any int64 offset: one compiled
# variant for every alignment (each program loads one of each).
@triton.jit(do_not_specialize=["pos_ptr", "slot_ptr"])
def _rotary_store_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    q_out_ptr,
    cache_ptr,
    pos_ptr,
    slot_ptr,
    cos_sin_ptr,
    q_stride,
    k_stride,
    v_stride,
    q_out_stride,
    v_offset,
    NUM_Q: tl.constexpr,
    NUM_K: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pdl_wait(USE_PDL)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    d = tl.arange(0, HEAD_DIM)[None, :]
    cos, sin = cos_sin_rows(cos_sin_ptr, pos, d, HEAD_DIM)

    hq = tl.arange(0, BLOCK_Q)[:, None]
    q = rotated(q_ptr + token * q_stride + hq * HEAD_DIM, d, cos, sin, hq < NUM_Q, HEAD_DIM)
    q_dst = q_out_ptr + token * q_out_stride + hq * HEAD_DIM + d
    tl.store(q_dst, q.to(q_out_ptr.dtype.element_ty), mask=hq < NUM_Q)

    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:
        hk = tl.arange(0, BLOCK_K)[:, None]
        k = rotated(k_ptr + token * k_stride + hk * HEAD_DIM, d, cos, sin, hk < NUM_K, HEAD_DIM)
        v = tl.load(v_ptr + token * v_stride + hk * HEAD_DIM + d, mask=hk < NUM_K)
        dst = cache_ptr + slot * (NUM_K * HEAD_DIM) + hk * HEAD_DIM + d
        tl.store(dst, k.to(cache_ptr.dtype.element_ty), mask=hk < NUM_K)
        tl.store(dst + v_offset, v.to(cache_ptr.dtype.element_ty), mask=hk < NUM_K)


def rotary_store(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    cos_sin: torch.Tensor,
    q_out: torch.Tensor,
) -> None:
    """Writes q [T, Hq, D] rotated into q_out (same shape), and rotated k and v [T, Hk, D] into kv_cache
    [2, num_blocks, block_size, Hk, D] at slot_mapping [T]. Rows may be strided views of one qkv tensor."""
    num_tokens, num_q, dim = q.shape
    num_k = k.shape[1]
    for x in (q, k, v, q_out):
        assert x.stride(1) == dim and x.stride(2) == 1
    _rotary_store_kernel[(num_tokens,)](
        q,
        k,
        v,
        q_out,
        kv_cache,
        positions,
        slot_mapping,
        cos_sin,
        q.stride(0),
        k.stride(0),
        v.stride(0),
        q_out.stride(0),
        kv_cache[0].numel(),
        NUM_Q=num_q,
        NUM_K=num_k,
        HEAD_DIM=dim,
        BLOCK_Q=triton.next_power_of_2(num_q),
        BLOCK_K=triton.next_power_of_2(num_k),
        **pdl_args(q),
    )
