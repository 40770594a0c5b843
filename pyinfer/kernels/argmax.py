"""Row-wise argmax over a large vocabulary in two small kernels: each program finds the maximum of one
chunk of a row, then one program per row picks the best chunk. Ties go to the lowest index, as in torch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pyinfer.kernels.pdl import pdl_args, pdl_wait

CHUNK = 2048


@triton.jit
def _chunk_max_kernel(
    logits_ptr, values_ptr, index_ptr, vocab, row_stride, CHUNK: tl.constexpr, USE_PDL: tl.constexpr
):
    pdl_wait(USE_PDL)
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row * row_stride + offs, mask=offs < vocab, other=float("-inf"))
    value, index = tl.max(x.to(tl.float32), 0, return_indices=True, return_indices_tie_break_left=True)
    slot = row * tl.num_programs(1) + chunk
    tl.store(values_ptr + slot, value)
    tl.store(index_ptr + slot, chunk * CHUNK + index)


@triton.jit
def _best_chunk_kernel(
    values_ptr, index_ptr, out_ptr, num_chunks, BLOCK: tl.constexpr, USE_PDL: tl.constexpr
):
    pdl_wait(USE_PDL)
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    values = tl.load(values_ptr + row * num_chunks + c, mask=c < num_chunks, other=float("-inf"))
    best = tl.argmax(values, 0, tie_break_left=True)
    tl.store(out_ptr + row, tl.load(index_ptr + row * num_chunks + best))


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] -> [B] int64, the index of each row's maximum."""
    rows, vocab = logits.shape
    chunks = triton.cdiv(vocab, CHUNK)
    values = torch.empty(rows, chunks, dtype=torch.float32, device=logits.device)
    index = torch.empty(rows, chunks, dtype=torch.int64, device=logits.device)
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    _chunk_max_kernel[(rows, chunks)](
        logits, values, index, vocab, logits.stride(0), CHUNK=CHUNK, **pdl_args(logits)
    )
    _best_chunk_kernel[(rows,)](
        values, index, out, chunks, BLOCK=triton.next_power_of_2(chunks), **pdl_args(logits)
    )
    return out
