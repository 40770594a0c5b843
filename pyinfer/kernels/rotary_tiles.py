"""Rotary embedding (neox half-split layout) inside Triton kernels: what the KV-write and the decode
kernels share. A head's column d pairs with its partner d ± D/2; sin carries the sign of the pairing."""

import triton
import triton.language as tl


@triton.jit
def cos_sin_rows(cos_sin_ptr, pos, d, HEAD_DIM: tl.constexpr):
    """cos and signed sin (-sin on the first half) of position pos at head columns d."""
    HALF: tl.constexpr = HEAD_DIM // 2
    cos = tl.load(cos_sin_ptr + pos * HEAD_DIM + d % HALF)
    sin = tl.load(cos_sin_ptr + pos * HEAD_DIM + HALF + d % HALF)
    return cos, tl.where(d < HALF, -sin, sin)


@triton.jit
def rotated(ptr, d, cos, sin, mask, HEAD_DIM: tl.constexpr):
    """The heads at ptr + d (d: head columns, broadcast over rows of heads) rotated, in fp32."""
    x = tl.load(ptr + d, mask=mask, other=0.0).to(tl.float32)
    partner = tl.load(ptr + (d + HEAD_DIM // 2) % HEAD_DIM, mask=mask, other=0.0).to(tl.float32)
    return x * cos + partner * sin
