"""Structured output's token mask on the logits: one program per (row, block of the vocabulary) reads
the row's packed bits (an int32 word per 32 tokens) and sets the logits of disallowed tokens to -inf."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _apply_token_bitmask_kernel(
    logits_ptr, bitmask_ptr, vocab, logits_stride, bitmask_stride, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < vocab
    words = tl.load(bitmask_ptr + row * bitmask_stride + offs // 32, mask=inside, other=-1)
    allowed = ((words >> (offs % 32)) & 1) != 0
    tl.store(logits_ptr + row * logits_stride + offs, float("-inf"), mask=inside & ~allowed)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place: logits [B, V] to -inf where bitmask [B, ceil(V / 32)] int32 has the token's bit clear."""
    rows, vocab = logits.shape
    grid = (rows, triton.cdiv(vocab, BLOCK))
    _apply_token_bitmask_kernel[grid](
        logits, bitmask, vocab, logits.stride(0), bitmask.stride(0), BLOCK=BLOCK
    )
