"""Matrix-vector product for batch-1 decode: y[1, N] = x[1, K] @ W[N, K]^T, the weight streamed once.

Four rows a program and 512-wide 16-byte loads along K: on an H100 this streams the 1B and 8B shapes'
matrices at 1.4-3.1 TB/s where cuBLAS reaches 1.3-2.8 (bench/gpu/gemv_tune.py). For more than one row
cuBLAS is faster, and for tall-K matrices (K > 2N, e.g. a small model's down projection) its split-K is.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 4


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, y_ptr, N, K, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    cols = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + rows[:, None].to(tl.int64) * stride_wn
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + cols
        k_mask = k < K
        w = tl.load(w_rows + k[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        x = tl.load(x_ptr + k, mask=k_mask, other=0.0)
        acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
    tl.store(y_ptr + rows, acc.to(y_ptr.dtype.element_ty), mask=row_mask)


def use_gemv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether gemv beats cuBLAS here: one row, a row-major weight that is not much taller in K than N,
    inside a CUDA graph being captured (launched eagerly from Python, a Triton kernel costs tens of
    microseconds of host time, more than it saves)."""
    return (
        x.numel() == x.shape[-1]
        and weight.stride(1) == 1
        and weight.shape[1] <= 2 * weight.shape[0]
        and x.is_cuda
        and torch.cuda.is_current_stream_capturing()
    )


def gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., K] holding one row, weight [N, K] -> [..., N] in x's dtype."""
    n, k = weight.shape
    x = x.contiguous()
    y = torch.empty(*x.shape[:-1], n, dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, BLOCK_N),)](
        x,
        weight,
        y,
        n,
        k,
        weight.stride(0),
        BLOCK_N=BLOCK_N,
        BLOCK_K=min(512, triton.next_power_of_2(k)),
        num_warps=8 if n <= 4096 else 4,
    )
    return y
