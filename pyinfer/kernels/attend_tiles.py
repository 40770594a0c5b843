"""The inner loop both paged attention kernels share: one online-softmax pass over a run of KV tiles,
and its two halves (loading a tile from the pages, folding it in), which the decode kernel also uses apart."""

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
def load_kv_tile(
    cache_ptr,
    tables_ptr,
    seq,
    kv_head,
    n,
    end,
    table_stride,
    v_offset,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Positions [n, n + BLOCK_N) of one sequence and their keys and values [BLOCK_N, D] from its pages
    (MASKED: zeros at and past end)."""
    d = tl.arange(0, HEAD_DIM)
    pos = n + tl.arange(0, BLOCK_N)
    row = NUM_KV_HEADS * HEAD_DIM
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
    return pos, k, v


@triton.jit
def attend_tile(
    q,
    m,
    denom,
    acc,
    pos,
    k,
    v,
    q_pos,
    end,
    qk_scale,
    MASKED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Folds one tile of keys and values at positions pos into the online softmax of the queries q [M, D]
    at positions q_pos (base 2: qk_scale includes LOG2E); MASKED applies the causal mask and the end bound.
    By the end of this tile every query must have seen a key: a query with no key yet (running max
    -inf) and only masked scores here would get NaN."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION).to(tl.float32) * qk_scale
    if MASKED:
        s = tl.where((pos[None, :] <= q_pos[:, None]) & (pos < end)[None, :], s, float("-inf"))
    m, denom, p, alpha = fold_scores(m, denom, s)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION).to(tl.float32)
    return m, denom, acc


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
    """The online softmax of attend_tile over the keys [start, end) of one sequence's pages, a tile at a
    time. Returns the updated running max, denominator and accumulator."""
    for n in range(start, end, BLOCK_N):
        pos, k, v = load_kv_tile(
            cache_ptr,
            tables_ptr,
            seq,
            kv_head,
            n,
            end,
            table_stride,
            v_offset,
            NUM_KV_HEADS,
            HEAD_DIM,
            PAGE,
            BLOCK_N,
            MASKED,
        )
        m, denom, acc = attend_tile(q, m, denom, acc, pos, k, v, q_pos, end, qk_scale, MASKED, DOT_PRECISION)
    return m, denom, acc
