"""Rotary embedding and the KV-cache write in one pass: q rotated in place, k rotated into its cache slot
beside v. One program per token; a slot of -1 (a CUDA graph's padding row) writes nothing."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from pyinfer.kernels import use_pdl


@triton.jit
def _rotated(x_ptr, cos, sin, mask, HALF: tl.constexpr):
    """The two halves of heads [H, 2*HALF] at x_ptr, rotated (neox layout), in fp32."""
    x1 = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


@triton.jit
def _rotary_store_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    cache_ptr,
    pos_ptr,
    slot_ptr,
    cos_sin_ptr,
    q_stride,
    k_stride,
    v_stride,
    v_offset,
    NUM_Q: tl.constexpr,
    NUM_K: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    pos = tl.load(pos_ptr + token).to(tl.int64)
    d = tl.arange(0, HALF)
    cos = tl.load(cos_sin_ptr + pos * 2 * HALF + d)[None, :]
    sin = tl.load(cos_sin_ptr + pos * 2 * HALF + HALF + d)[None, :]

    hq = tl.arange(0, BLOCK_Q)[:, None]
    q_at = q_ptr + token * q_stride + hq * (2 * HALF) + d[None, :]
    q1, q2 = _rotated(q_at, cos, sin, hq < NUM_Q, HALF)
    tl.store(q_at, q1.to(q_ptr.dtype.element_ty), mask=hq < NUM_Q)
    tl.store(q_at + HALF, q2.to(q_ptr.dtype.element_ty), mask=hq < NUM_Q)

    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:
        hk = tl.arange(0, BLOCK_K)[:, None]
        k_mask = hk < NUM_K
        k1, k2 = _rotated(k_ptr + token * k_stride + hk * (2 * HALF) + d[None, :], cos, sin, k_mask, HALF)
        dst = cache_ptr + slot * (NUM_K * 2 * HALF) + hk * (2 * HALF) + d[None, :]
        tl.store(dst, k1.to(cache_ptr.dtype.element_ty), mask=k_mask)
        tl.store(dst + HALF, k2.to(cache_ptr.dtype.element_ty), mask=k_mask)
        v_at = v_ptr + token * v_stride + hk * (2 * HALF) + d[None, :]
        tl.store(dst + v_offset, tl.load(v_at, mask=k_mask), mask=k_mask)
        tl.store(dst + v_offset + HALF, tl.load(v_at + HALF, mask=k_mask), mask=k_mask)


def rotary_store(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    cos_sin: torch.Tensor,
) -> None:
    """Rotates q [T, Hq, D] in place and writes rotated k and v [T, Hk, D] (rows may be strided views
    of one qkv tensor) into kv_cache [2, num_blocks, block_size, Hk, D] at slot_mapping [T]."""
    num_tokens, num_q, dim = q.shape
    num_k = k.shape[1]
    assert q.stride(1) == k.stride(1) == v.stride(1) == dim and q.stride(2) == k.stride(2) == v.stride(2) == 1
    pdl = use_pdl(q)
    _rotary_store_kernel[(num_tokens,)](
        q,
        k,
        v,
        kv_cache,
        positions,
        slot_mapping,
        cos_sin,
        q.stride(0),
        k.stride(0),
        v.stride(0),
        kv_cache[0].numel(),
        NUM_Q=num_q,
        NUM_K=num_k,
        HALF=dim // 2,
        BLOCK_Q=triton.next_power_of_2(num_q),
        BLOCK_K=triton.next_power_of_2(num_k),
        USE_PDL=pdl,
        launch_pdl=pdl,
    )
