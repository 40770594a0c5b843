"""Paged decode attention (one new token per sequence), GQA-aware and split over the KV length, fused
with the new token's rotary embedding and KV-cache write: one kernel per layer and step.

Program (sequence, KV head, split) rotates the query heads that share its KV head and keeps an online
softmax over its share of the cached context, loading each K/V tile once for all of them. The new
token's key and value never round-trip through memory: the split that holds the last position rotates
the key, writes key and value into the token's cache slot and adds them to its softmax, so no program
reads a slot that another writes. With several splits at work, the last program of a (sequence, KV
head) to finish, counted with an atomic, merges the splits by their log-sum-exp. The number of splits
is fixed per launch (CUDA-graph safe); each split takes whole 64-key tiles, so short contexts leave
the later splits idle instead of merging many tiny ones. A split loads its first tile of cached
keys and values before it waits for the kernel that computed q, k and v (programmatic dependent
launch), so at short contexts the whole key read overlaps that kernel's tail.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pyinfer.kernels import MAX_SPLITS, dot_precision
from pyinfer.kernels.attend_tiles import LOG2E, attend_tile, attend_tiles, fold_scores, load_kv_tile
from pyinfer.kernels.pdl import pdl_args, pdl_wait
from pyinfer.kernels.rotary_tiles import cos_sin_rows, rotated

# keys per tile, and the fewest a split takes: one tile a split was the fastest batch-1 decode on the H200
# (bench/results/2026-11-30-h200-session4.md, the split sweep)
BLOCK_N = 64
_split_counters: dict[torch.device, torch.Tensor] = {}
_outgrown_counters: list[torch.Tensor] = []  # never freed: graphs captured with them still use them
_unused_partials: dict[torch.device, torch.Tensor] = {}


# the block table's width changes every step, the split count with the batch, and the alignment of the
# step inputs' addresses (slices of one upload) with the step's size: one compiled variant for all of them
@triton.jit(do_not_specialize=["tables_ptr", "seq_lens_ptr", "slot_ptr", "table_stride", "num_splits"])
def _decode_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    cache_ptr,
    tables_ptr,
    seq_lens_ptr,
    slot_ptr,
    cos_sin_ptr,
    out_ptr,
    part_ptr,
    lse_ptr,
    count_ptr,
    scale,
    q_stride,
    k_stride,
    v_stride,
    table_stride,
    v_offset,
    out_stride,
    num_splits,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HEAD_DIM)
    head_mask = h < GROUP
    heads = kv_head * GROUP + h
    out_at = out_ptr + seq * out_stride + heads[:, None] * HEAD_DIM + d[None, :]
    # Lengths, slots and tables come from the step's inputs, and cached keys from earlier steps: nothing
    # the previous kernel writes. Every program waits for that kernel once, before reading its output.
    seq_len = tl.load(seq_lens_ptr + seq)
    if seq_len == 0:  # a CUDA graph's padding row: zeros, and nothing written to the cache
        pdl_wait(USE_PDL)
        if split == 0:
            tl.store(out_at, tl.zeros([BLOCK_H, HEAD_DIM], out_ptr.dtype.element_ty), mask=head_mask[:, None])
        return
    per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N  # whole tiles
    working = tl.cdiv(seq_len, per_split)  # splits with keys to attend to
    if split >= working:
        pdl_wait(USE_PDL)
        return
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)
    cached_end = tl.minimum(end, seq_len - 1)  # the cached keys; the new one comes from registers below

    # The split's first tile of cached keys and the new token's rotation and slot, loaded before the wait
    # so that they overlap the previous kernel's tail.
    pos = (seq_len - 1).to(tl.int64)  # the new token follows every cached one
    cos, sin = cos_sin_rows(cos_sin_ptr, pos, d, HEAD_DIM)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    first_pos, first_k, first_v = load_kv_tile(
        cache_ptr,
        tables_ptr,
        seq,
        kv_head,
        start,
        cached_end,
        table_stride,
        v_offset,
        NUM_KV_HEADS,
        HEAD_DIM,
        PAGE,
        BLOCK_N,
        True,
    )
    pdl_wait(USE_PDL)

    q_heads = q_ptr + seq * q_stride + heads[:, None] * HEAD_DIM
    q = rotated(q_heads, d[None, :], cos[None, :], sin[None, :], head_mask[:, None], HEAD_DIM)
    q = q.to(q_ptr.dtype.element_ty)  # rounded as rotary_store rounds a prefill's q
    k = rotated(k_ptr + seq * k_stride + kv_head * HEAD_DIM, d, cos, sin, d < HEAD_DIM, HEAD_DIM)
    k = k.to(cache_ptr.dtype.element_ty)
    v = tl.load(v_ptr + seq * v_stride + kv_head * HEAD_DIM + d)

    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
    q_pos = tl.zeros([BLOCK_H], tl.int64) + seq_len - 1
    qk_scale = scale * LOG2E
    if start < cached_end:
        m, denom, acc = attend_tile(
            q, m, denom, acc, first_pos, first_k, first_v, q_pos, cached_end, qk_scale, True, DOT_PRECISION
        )
    m, denom, acc = attend_tiles(
        q,
        m,
        denom,
        acc,
        cache_ptr,
        tables_ptr,
        seq,
        kv_head,
        q_pos,
        start + BLOCK_N,
        cached_end,
        qk_scale,
        table_stride,
        v_offset,
        NUM_KV_HEADS,
        HEAD_DIM,
        PAGE,
        BLOCK_N,
        True,
        DOT_PRECISION,
    )
    if end == seq_len:  # this split holds the new token
        if slot >= 0:
            dst = cache_ptr + slot * (NUM_KV_HEADS * HEAD_DIM) + kv_head * HEAD_DIM + d
            tl.store(dst, k)
            tl.store(dst + v_offset, v.to(cache_ptr.dtype.element_ty))
        s = tl.sum(q.to(tl.float32) * k.to(tl.float32)[None, :], 1, keep_dims=True) * qk_scale  # [H, 1]
        m, denom, p, alpha = fold_scores(m, denom, s)
        p = p.to(cache_ptr.dtype.element_ty).to(tl.float32)  # as the tile loop rounds p before P @ V
        acc = acc * alpha[:, None] + p * v.to(tl.float32)[None, :]

    if working == 1:
        tl.store(out_at, (acc / denom[:, None]).to(out_ptr.dtype.element_ty), mask=head_mask[:, None])
    else:
        rows = (seq * NUM_KV_HEADS * GROUP + heads) * num_splits  # [BLOCK_H] first split of each head
        tl.store(
            part_ptr + (rows + split)[:, None] * HEAD_DIM + d[None, :],
            acc / denom[:, None],
            mask=head_mask[:, None],
        )
        tl.store(lse_ptr + rows + split, m + tl.log2(denom), mask=head_mask)
        tl.debug_barrier()  # every thread's partial written before the count says so
        counter = count_ptr + seq * NUM_KV_HEADS + kv_head
        if tl.atomic_add(counter, 1, sem="acq_rel") == working - 1:  # the last split to finish merges
            tl.store(counter, 0)
            tl.debug_barrier()
            # each split's output weighs exp2(its lse): an online softmax over the splits
            top = tl.full([BLOCK_H], float("-inf"), tl.float32)
            total = tl.zeros([BLOCK_H], tl.float32)
            merged = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
            for i in range(0, working):
                lse = tl.load(lse_ptr + rows + i, mask=head_mask, other=0.0, cache_modifier=".cg")
                part = tl.load(
                    part_ptr + (rows + i)[:, None] * HEAD_DIM + d[None, :],
                    mask=head_mask[:, None],
                    other=0.0,
                    cache_modifier=".cg",
                )
                top, total, w, alpha = fold_scores(top, total, lse[:, None])
                merged = merged * alpha[:, None] + part * w
            tl.store(out_at, (merged / total[:, None]).to(out_ptr.dtype.element_ty), mask=head_mask[:, None])


def _workspace(device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed split counters, one per (sequence, KV head), each merge setting its own back to zero; and
    the float32 stand-in for the partials of a one-split launch, which never touches them (a pointer of
    the output's dtype there would compile a second variant of the kernel). The counters grow outside
    CUDA-graph capture (the largest graph is warmed up before any is captured), and a buffer outgrown
    stays allocated, as graphs captured earlier hold its address."""
    counters = _split_counters.get(device)
    if counters is None or counters.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("decode split counters must grow before CUDA-graph capture")
        if counters is not None:
            _outgrown_counters.append(counters)
        counters = _split_counters[device] = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _unused_partials.setdefault(device, torch.empty(1, dtype=torch.float32, device=device))
    return counters, _unused_partials[device]


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    slot_mapping: torch.Tensor,
    cos_sin: torch.Tensor,
    scale: float,
    num_splits: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [B, Hq, D] and the new token's k, v [B, Hk, D], not yet rotated (rows may be strided views of
    one qkv tensor) -> [B, Hq, D]. Sequence b attends to seq_lens[b] keys: the seq_lens[b] - 1 in its
    cache, then the new one at position seq_lens[b] - 1, which is written to kv_cache at
    slot_mapping[b] (-1: not written)."""
    assert 1 <= num_splits <= MAX_SPLITS
    assert q.stride(2) == k.stride(2) == v.stride(2) == 1
    assert q.stride(1) == k.stride(1) == v.stride(1) == q.shape[2]
    batch, num_heads, head_dim = q.shape
    _, _, page, num_kv_heads, _ = kv_cache.shape
    group = num_heads // num_kv_heads
    out = torch.empty_like(q) if out is None else out
    counters, unused = _workspace(q.device, batch * num_kv_heads)
    if num_splits == 1:  # every program writes the output itself: no partials to merge
        part = lse = unused
    else:
        part = torch.empty(batch, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(batch, num_heads, num_splits, dtype=torch.float32, device=q.device)
    _decode_kernel[(batch, num_kv_heads, num_splits)](
        q,
        k,
        v,
        kv_cache,
        block_tables,
        seq_lens,
        slot_mapping,
        cos_sin,
        out,
        part,
        lse,
        counters,
        scale,
        q.stride(0),
        k.stride(0),
        v.stride(0),
        block_tables.stride(0),
        kv_cache[0].numel(),
        out.stride(0),
        num_splits,
        NUM_KV_HEADS=num_kv_heads,
        GROUP=group,
        HEAD_DIM=head_dim,
        PAGE=page,
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        BLOCK_N=BLOCK_N,
        DOT_PRECISION=dot_precision(q.dtype),
        **pdl_args(q),
    )
    return out
