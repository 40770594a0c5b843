"""Fused small ops between the matmuls: residual add + RMSNorm, rotary embedding in place, SiLU-and-mul."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    eps,
    x_stride,
    res_stride,
    N: tl.constexpr,
    BLOCK: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + row * x_stride + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + row * res_stride + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(residual_out_ptr + row * N + offs, x.to(residual_out_ptr.dtype.element_ty), mask=mask)
    rstd = tl.rsqrt(tl.sum(x * x, 0) / N + eps)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0)
    # Round to the activation dtype before the weight, as the reference does.
    y = (x * rstd).to(out_ptr.dtype.element_ty) * w
    tl.store(out_ptr + row * N + offs, y, mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """norm(x) or, with residual, (norm(x + residual), x + residual). x [T, N]."""
    rows, n = x.shape
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    res_out = torch.empty_like(out) if residual is not None else out
    _rms_norm_kernel[(rows,)](
        x,
        residual if residual is not None else x,
        weight,
        out,
        res_out,
        eps,
        x.stride(0),
        residual.stride(0) if residual is not None else 0,
        N=n,
        BLOCK=triton.next_power_of_2(n),
        HAS_RESIDUAL=residual is not None,
        num_warps=4 if n <= 4096 else 8,
    )
    return out if residual is None else (out, res_out)


@triton.jit
def _rotate_heads(
    ptr, stride, token, cos, sin, NUM_HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr
):
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HALF)
    mask = (h < NUM_HEADS)[:, None]
    base = ptr + token * stride + h[:, None] * (2 * HALF) + d[None, :]
    x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(base, (x1 * cos - x2 * sin).to(ptr.dtype.element_ty), mask=mask)
    tl.store(base + HALF, (x2 * cos + x1 * sin).to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr,
    k_ptr,
    pos_ptr,
    cos_sin_ptr,
    q_stride,
    k_stride,
    NUM_Q: tl.constexpr,
    NUM_K: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    token = tl.program_id(0)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    d = tl.arange(0, HALF)
    cos = tl.load(cos_sin_ptr + pos * 2 * HALF + d)[None, :]
    sin = tl.load(cos_sin_ptr + pos * 2 * HALF + HALF + d)[None, :]
    _rotate_heads(q_ptr, q_stride, token, cos, sin, NUM_Q, HALF, BLOCK_Q)
    _rotate_heads(k_ptr, k_stride, token, cos, sin, NUM_K, HALF, BLOCK_K)


def rotary_(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin: torch.Tensor) -> None:
    """Rotate q [T, Hq, D] and k [T, Hk, D] in place (rows may be strided views into one qkv tensor)."""
    num_tokens, num_q, dim = q.shape
    num_k = k.shape[1]
    assert q.stride(1) == k.stride(1) == dim and q.stride(2) == k.stride(2) == 1
    _rotary_kernel[(num_tokens,)](
        q,
        k,
        positions,
        cos_sin,
        q.stride(0),
        k.stride(0),
        NUM_Q=num_q,
        NUM_K=num_k,
        HALF=dim // 2,
        BLOCK_Q=triton.next_power_of_2(num_q),
        BLOCK_K=triton.next_power_of_2(num_k),
    )


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, x_stride, N: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    gate = tl.load(x_ptr + row * x_stride + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + N + offs, mask=mask, other=0.0)
    y = (gate / (1.0 + tl.exp(-gate))).to(up.dtype) * up
    tl.store(out_ptr + row * N + offs, y, mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2N] = [gate | up] -> silu(gate) * up, [T, N]."""
    rows, width = x.shape
    n = width // 2
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(n))
    _silu_and_mul_kernel[(rows, triton.cdiv(n, block))](x, out, x.stride(0), N=n, BLOCK=block)
    return out
