"""Write this step's keys and values into their slots of the paged KV cache."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    cache_ptr,
    slot_ptr,
    k_row_stride,
    v_row_stride,
    v_offset,
    WIDTH: tl.constexpr,
    BLOCK: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:  # padding rows of a CUDA graph
        return
    offs = tl.arange(0, BLOCK)
    mask = offs < WIDTH
    k = tl.load(k_ptr + token * k_row_stride + offs, mask=mask)
    v = tl.load(v_ptr + token * v_row_stride + offs, mask=mask)
    tl.store(cache_ptr + slot * WIDTH + offs, k, mask=mask)
    tl.store(cache_ptr + v_offset + slot * WIDTH + offs, v, mask=mask)


def store_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """kv_cache [2, num_blocks, block_size, Hk, D]; k, v [T, Hk, D] (rows may be strided); slot -1 skips."""
    num_tokens, heads, dim = k.shape
    assert k.stride(2) == v.stride(2) == 1 and k.stride(1) == v.stride(1) == dim
    width = heads * dim
    _store_kv_kernel[(num_tokens,)](
        k,
        v,
        kv_cache,
        slot_mapping,
        k.stride(0),
        v.stride(0),
        kv_cache[0].numel(),
        WIDTH=width,
        BLOCK=triton.next_power_of_2(width),
    )
