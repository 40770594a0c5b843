"""The inner loop both paged attention kernels share: one online-softmax pass over a run of KV tiles."""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # scores are scaled by it: the softmax runs in base 2


@triton.jit
def fold_scores(m, denom, s):
    """Folds scores s [M, N] (base 2) into the running max m and denominator denom [M]. Returns the
    new max and denominator, the weights p = exp2(s - max) and alpha, the factor that rescales what
    was accumulated before."""
    m_new = tl.maximum(m, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m - m_new)
    return m_new, denom * alpha + tl.sum(p, 1), p, alpha


@triton.jit
def attend_tiles(
    q,
    m,
    denom,
    acc,
    cache_ptr,
    tables_ptr,
    seq,
    kv_head,
    q_pos,
    start,
    end,
    qk_scale,
    table_stride,
    v_offset,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online softmax (base 2: qk_scale includes LOG2E) of the queries q [M, D] at positions q_pos
    over the keys [start, end) of one sequence's pages; MASKED applies the causal mask and the end bound.
    Returns the updated running max, denominator and accumulator."""
    d = tl.arange(0, HEAD_DIM)
    row = NUM_KV_HEADS * HEAD_DIM
    for n in range(start, end, BLOCK_N):
        pos = n + tl.arange(0, BLOCK_N)
        if MASKED:
            pos_mask = pos < end
            page = tl.load(tables_ptr + seq * table_stride + pos // PAGE, mask=pos_mask, other=0).to(tl.int64)
        else:
            page = tl.load(tables_ptr + seq * table_stride + pos // PAGE).to(tl.int64)
        offs = (page * PAGE + pos % PAGE)[:, None] * row + kv_head * HEAD_DIM + d[None, :]
        if MASKED:
            k = tl.load(cache_ptr + offs, mask=pos_mask[:, None], other=0.0)
            v = tl.load(cache_ptr + v_offset + offs, mask=pos_mask[:, None], other=0.0)
        else:
            k = tl.load(cache_ptr + offs)
            v = tl.load(cache_ptr + v_offset + offs)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION).to(tl.float32) * qk_scale
        if MASKED:
            s = tl.where((pos[None, :] <= q_pos[:, None]) & pos_mask[None, :], s, float("-inf"))
        m, denom, p, alpha = fold_scores(m, denom, s)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION).to(tl.float32)
    return m, denom, acc
