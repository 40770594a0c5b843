"""Matrix-vector products for batch-1 decode: y = g(f(x)[1, K] @ W[N, K]^T), the weight streamed once.

f is the identity or RMSNorm (of x, or of x + residual, the sum written back as the new residual); g is
the identity (y is [1, N]) or, for a merged [gate; up] weight, SiLU(gate) * up (y is [1, N / 2]). So the
small kernels between the matmuls disappear at batch 1. Each program takes tiles of BLOCK_N rows in
turn, streaming each tile along K in chunks of up to 2,048 columns (16-byte loads), the next chunk's
load issued before the current one is used. On a GPU with programmatic dependent launch (Hopper), a program loads its first weight chunk
before waiting for the previous kernel, so one matmul's weight stream starts while the kernel before
it drains.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pyinfer.kernels import num_sms
from pyinfer.kernels.compile_ahead import capturing_graph
from pyinfer.kernels.pdl import pdl_args, pdl_wait

# what happens to x before the product (the norms last: PROLOGUE >= NORM tests for either)
PLAIN = tl.constexpr(0)
NORM = tl.constexpr(1)
ADD_NORM = tl.constexpr(2)


@triton.jit
def _norm_input(x_ptr, res_ptr, k, k_mask, PROLOGUE: tl.constexpr):
    """What the norm normalizes at columns k, in fp32: x, or x + residual (unrounded, as in the RMSNorm
    kernel)."""
    h = tl.load(x_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
    if PROLOGUE == ADD_NORM:
        h += tl.load(res_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
    return h


@triton.jit
def _input_chunk(x_ptr, res_ptr, norm_ptr, k, k_mask, rstd, PROLOGUE: tl.constexpr):
    """f(x)[k] in fp32, rounded where the unfused RMSNorm rounds (to x's dtype, before and after the weight)."""
    if PROLOGUE == PLAIN:
        return tl.load(x_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
    h = _norm_input(x_ptr, res_ptr, k, k_mask, PROLOGUE)
    w = tl.load(norm_ptr + k, mask=k_mask, other=0.0)
    return ((h * rstd).to(x_ptr.dtype.element_ty) * w).to(tl.float32)


@triton.jit
def _tile_rows(tile, N, BLOCK_N: tl.constexpr, GATED: tl.constexpr):
    """The weight rows of a tile and which of them exist. GATED: [gate; up] rows in pairs, gate row j
    then up row j, so that a tile holds both halves of its BLOCK_N // 2 outputs."""
    r = tl.arange(0, BLOCK_N)
    if GATED:
        outputs = tile * (BLOCK_N // 2) + r // 2
        return outputs + (r % 2) * (N // 2), outputs < N // 2
    rows = tile * BLOCK_N + r
    return rows, rows < N


@triton.jit
def _weight_chunk(
    w_ptr,
    pid,
    step,
    num_programs,
    num_chunks,
    total,
    N,
    K,
    stride_wn,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GATED: tl.constexpr,
):
    """Program pid's step-th [BLOCK_N, BLOCK_K] weight chunk: tile pid + (step // num_chunks) * programs,
    chunk step % num_chunks along K; zeros past the matrix or past the program's last step."""
    rows, live = _tile_rows(pid + (step // num_chunks) * num_programs, N, BLOCK_N, GATED)
    k = (step % num_chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
    # (rows * 0 + step) < total: a vector, as Triton 3.9's interpreter takes no scalar in a mask
    live = live & (rows * 0 + step < total)
    return tl.load(
        w_ptr + rows[:, None].to(tl.int64) * stride_wn + k[None, :],
        mask=live[:, None] & (k < K)[None, :],
        other=0.0,
    )


@triton.jit
def _store_tile(y_ptr, acc, tile, N, BLOCK_N: tl.constexpr, GATED: tl.constexpr):
    """Writes a tile's products, rounded to y's dtype; GATED: SiLU(gate) * up of each pair, rounded where
    the unfused linear and SiLU-and-mul kernels round."""
    dtype = y_ptr.dtype.element_ty
    if GATED:
        gate, up = tl.split(tl.reshape(acc, [BLOCK_N // 2, 2]))
        gate = gate.to(dtype).to(tl.float32)
        y = (gate / (1.0 + tl.exp(-gate))).to(dtype) * up.to(dtype)
        outputs = tile * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        tl.store(y_ptr + outputs, y, mask=outputs < N // 2)
    else:
        rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.store(y_ptr + rows, acc.to(dtype), mask=rows < N)


@triton.jit
def _gemv_kernel(
    x_ptr,
    res_ptr,
    norm_ptr,
    res_out_ptr,
    w_ptr,
    y_ptr,
    N,
    K,
    stride_wn,
    eps,
    PROLOGUE: tl.constexpr,
    GATED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    num_chunks = tl.cdiv(K, BLOCK_K)
    # (tile, chunk) steps; a gated tile holds BLOCK_N // 2 of the N // 2 outputs: the same tile count
    total = tl.cdiv(tl.cdiv(N, BLOCK_N) - pid, num_programs) * num_chunks
    c = tl.arange(0, BLOCK_K)

    # The weights do not depend on earlier kernels: start streaming them before waiting for those.
    w = _weight_chunk(
        w_ptr, pid, 0, num_programs, num_chunks, total, N, K, stride_wn, BLOCK_N, BLOCK_K, GATED
    )
    pdl_wait(USE_PDL)

    rstd = 0.0
    if PROLOGUE >= NORM:
        squares = tl.zeros([BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + c
            h = _norm_input(x_ptr, res_ptr, k, k < K, PROLOGUE)
            if PROLOGUE == ADD_NORM:  # noqa: SIM102 (compile-time branch around a run-time one)
                if pid == 0:
                    tl.store(res_out_ptr + k, h.to(res_out_ptr.dtype.element_ty), mask=k < K)
            squares += h * h
        rstd = tl.rsqrt(tl.sum(squares, 0) / K + eps)

    acc = tl.zeros([BLOCK_N], tl.float32)
    for step in range(0, total):
        tile = pid + (step // num_chunks) * num_programs
        k = (step % num_chunks) * BLOCK_K + c
        # issue the next chunk's load (same tile, or this program's next tile) before using this one
        w_next = _weight_chunk(
            w_ptr, pid, step + 1, num_programs, num_chunks, total, N, K, stride_wn, BLOCK_N, BLOCK_K, GATED
        )
        x = _input_chunk(x_ptr, res_ptr, norm_ptr, k, k < K, rstd, PROLOGUE)
        acc += tl.sum(w.to(tl.float32) * x[None, :], 1)
        if step % num_chunks == num_chunks - 1:
            _store_tile(y_ptr, acc, tile, N, BLOCK_N, GATED)
            acc = tl.zeros([BLOCK_N], tl.float32)
        w = w_next


def use_gemv(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Whether the fused GEMV runs here: one row and a dense row-major weight, in a CUDA graph
    (launched eagerly from Python, a Triton kernel costs tens of microseconds of host time, more than
    it saves)."""
    return (
        weight is not None
        and x.numel() == x.shape[-1]
        and weight.stride(1) == 1
        and x.is_cuda
        and capturing_graph()
    )


def _config(n: int, k: int) -> tuple[int, int, int, int]:
    """(rows, K-chunk, warps, programs per multiprocessor) of a launch. bench/gpu/gemv_tune.py on an H200,
    1B and 8B shapes: 4 x 2048 tiles of 4 warps; at most 4 programs per multiprocessor (each then takes
    more tiles in turn) for the products of up to 8,192 rows, 8 for the larger ones (gate_up, LM
    heads). The LM heads take 8-row tiles: the sweep put 4-row ones 10% behind on the 8B head in one
    run and 4% ahead in the next (that row moves by up to 30 us between runs); the end-to-end
    figures in bench/results were measured with 8."""
    rows = 8 if n > 65536 else 4
    return rows, min(2048, triton.next_power_of_2(k)), 4, (4 if n <= 8192 else 8)


def _launch(
    prologue: int,
    x: torch.Tensor,
    weight: torch.Tensor,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    residual_out: torch.Tensor | None = None,
    gated: bool = False,
) -> torch.Tensor:
    n, k = weight.shape
    assert not gated or n % 2 == 0, "a gated weight stacks gate and up rows of equal count"
    x = x.contiguous()
    y = torch.empty(*x.shape[:-1], n // 2 if gated else n, dtype=x.dtype, device=x.device)
    block_n, block_k, num_warps, per_sm = _config(n, k)
    # in the interpreter, 3 programs: each takes several tiles
    cap = per_sm * num_sms(x.device) if x.is_cuda else 3
    _gemv_kernel[(min(triton.cdiv(n, block_n), cap),)](
        x,
        residual if residual is not None else x,
        norm_weight if norm_weight is not None else x,
        residual_out if residual_out is not None else x,
        weight,
        y,
        n,
        k,
        weight.stride(0),
        eps,
        PROLOGUE=prologue,
        GATED=gated,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        **pdl_args(x),
        num_warps=num_warps,
    )
    return y


def gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., K] holding one row, weight [N, K] -> x @ weight.T [..., N] in x's dtype."""
    return _launch(PLAIN, x, weight)


def norm_gemv(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    gated: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm then the product, for one row: returns (norm(x + residual) @ weight.T, x + residual);
    without a residual, (norm(x) @ weight.T, x). gated: weight is [gate; up] (2I rows) and the product
    becomes SiLU(gate) * up, [..., I]."""
    if residual is None:
        return _launch(NORM, x, weight, norm_weight=norm_weight, eps=eps, gated=gated), x
    residual_out = torch.empty_like(x)
    y = _launch(ADD_NORM, x, weight, residual.contiguous(), norm_weight, eps, residual_out, gated)
    return y, residual_out
