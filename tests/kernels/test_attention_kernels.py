"""Triton paged attention kernels against the PyTorch reference backend, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from pyinfer.attention.torch_backend import causal_attention, gather_kv
from pyinfer.kernels.decode_attention import _split_counters, decode_attention
from pyinfer.kernels.prefill_attention import prefill_attention
from pyinfer.kernels.rotary_store import rotary_store
from pyinfer.layers.rotary import RotaryEmbedding
from tests.conftest import LLAMA3_SCALING
from tests.kernels.conftest import compiled_variants, rotate_half_split, tolerance

PAGE = 16


def paged_setup(seq_lens: list[int], num_kv_heads: int, head_dim: int, device: str, dtype, seed: int):
    """A random KV cache with shuffled block tables, so that pages are not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-n // PAGE) for n in seq_lens]
    total = sum(blocks_per_seq) + 3
    perm = torch.randperm(total, generator=gen).tolist()
    tables, i = [], 0
    for nb in blocks_per_seq:
        tables.append(perm[i : i + nb])
        i += nb
    width = max(blocks_per_seq)
    block_tables = torch.tensor(
        [t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=device
    )
    cache = torch.randn(2, total, PAGE, num_kv_heads, head_dim, generator=gen).to(device, dtype)
    return cache, block_tables


def reference(q, cache, block_tables, query_lens, seq_lens, scale):
    """The PyTorch backend's per-sequence path, in fp32: queries attend to what is in the cache (the
    kernels' [2, blocks, page, Hk, D] cache seen in the PyTorch backend's head-major layout)."""
    outs, start = [], 0
    for i, (ql, sl) in enumerate(zip(query_lens, seq_lens, strict=True)):
        k, v = gather_kv(cache.float().permute(0, 3, 1, 2, 4), block_tables[i], sl, PAGE, torch.float32)
        outs.append(causal_attention(q[start : start + ql].float(), k, v, scale))
        start += ql
    return torch.cat(outs)


CASES = [  # (num_heads, num_kv_heads, head_dim)
    (4, 4, 64),
    (8, 2, 64),
    (8, 1, 128),
]


def decode_step(seq_lens, heads, kv_heads, head_dim, device, dtype, seed):
    """One decode step's inputs: a cache with each sequence's earlier keys, and the new token's q, k and v,
    not yet rotated, as strided views of one qkv tensor (as in the model). Returns them with the expected
    cache (the rotated key and the value in the token's slot) and the expected output (the rotated query
    attending to that cache). A length of 0 is a padding row (slot -1)."""
    cache, tables = paged_setup([max(n, 1) for n in seq_lens], kv_heads, head_dim, device, dtype, seed)
    rope = RotaryEmbedding(head_dim, 8192, 500000.0, LLAMA3_SCALING).to(device)
    width, batch = kv_heads * head_dim, len(seq_lens)
    gen = torch.Generator().manual_seed(seed + 1)
    qkv = torch.randn(batch, heads * head_dim + 2 * width, generator=gen).to(device, dtype)
    q = qkv[:, : heads * head_dim].view(batch, heads, head_dim)
    k = qkv[:, heads * head_dim : heads * head_dim + width].view(batch, kv_heads, head_dim)
    v = qkv[:, heads * head_dim + width :].view(batch, kv_heads, head_dim)
    positions = torch.tensor([max(n - 1, 0) for n in seq_lens], device=device)
    slots = [
        tables[i, (n - 1) // PAGE].item() * PAGE + (n - 1) % PAGE if n else -1 for i, n in enumerate(seq_lens)
    ]
    ref_q, ref_k = rotate_half_split(positions, q, k, rope.cos_sin)
    expected_cache = cache.clone()
    flat = expected_cache.view(2, -1, kv_heads, head_dim)
    for i, slot in enumerate(slots):
        if slot >= 0:
            flat[0, slot], flat[1, slot] = ref_k[i].to(device, dtype), v[i]
    live = [i for i, n in enumerate(seq_lens) if n]
    expected = torch.zeros(batch, heads, head_dim)
    expected[live] = reference(
        ref_q[live].to(device, dtype),
        expected_cache,
        tables[live],
        [1] * len(live),
        [seq_lens[i] for i in live],
        head_dim**-0.5,
    ).cpu()
    args = (
        q,
        k,
        v,
        cache,
        tables,
        torch.tensor(seq_lens, dtype=torch.int32, device=device),
        torch.tensor(slots, device=device),
        rope.cos_sin,
        head_dim**-0.5,
    )
    return args, expected_cache, expected


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), CASES)
def test_decode_attention_rotates_writes_the_new_token_and_attends(heads, kv_heads, head_dim, device, dtype):
    # one token; page and tile boundaries; several tiles a split; a last split that holds only the new key
    seq_lens = [1, 15, 16, 17, 100, 300, 129, 257]
    for splits in (1, 3, 8):
        args, expected_cache, expected = decode_step(
            seq_lens, heads, kv_heads, head_dim, device, dtype, seed=heads
        )
        out = decode_attention(*args, num_splits=splits)
        torch.testing.assert_close(out.cpu().float(), expected, **tolerance(dtype))
        cache = args[3]
        torch.testing.assert_close(cache.cpu().float(), expected_cache.cpu().float(), **tolerance(dtype))


def test_decode_attention_split_counters_reset_for_the_next_step(device, dtype):
    """The merge counters are shared by every launch: a second step must merge like the first."""
    for seed in (1, 2):
        args, _, expected = decode_step([700, 260], 8, 2, 64, device, dtype, seed=seed)
        out = decode_attention(*args, num_splits=6)
        torch.testing.assert_close(out.cpu().float(), expected, **tolerance(dtype))
        assert not _split_counters[out.device].any()


def test_decode_attention_padding_rows_are_zero_and_write_nothing(device, dtype):
    args, expected_cache, expected = decode_step([20, 300, 0], 4, 2, 64, device, dtype, seed=3)
    out = decode_attention(*args, num_splits=4)  # row 1 merges 3 splits beside the padding row
    assert torch.isfinite(out).all() and out[2].abs().max() == 0
    torch.testing.assert_close(out.cpu().float(), expected, **tolerance(dtype))
    assert torch.equal(args[3], expected_cache)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), CASES)
def test_prefill_attention_over_cached_prefix_matches_reference(heads, kv_heads, head_dim, device, dtype):
    # (query length, total length): fresh prompts, chunks after a cached prefix, a 1-token chunk
    shapes = [(17, 17), (5, 40), (33, 33), (1, 9), (16, 48)]
    query_lens = [q for q, _ in shapes]
    seq_lens = [s for _, s in shapes]
    cache, tables = paged_setup(seq_lens, kv_heads, head_dim, device, dtype, seed=7 + heads)
    q = torch.randn(sum(query_lens), heads, head_dim).to(device, dtype)
    starts = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    out = prefill_attention(q, cache, tables, starts, lens, max(query_lens), head_dim**-0.5)
    ref = reference(q, cache, tables, query_lens, seq_lens, head_dim**-0.5)
    torch.testing.assert_close(out.float(), ref, **tolerance(dtype))


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 64), (9, 3, 64), (32, 8, 128)])
def test_rotary_store_rotates_q_and_writes_rotated_k_and_v_to_their_slots(
    heads, kv_heads, head_dim, device, dtype
):
    rope = RotaryEmbedding(head_dim, 512, 500000.0, LLAMA3_SCALING).to(device)
    tokens, width = 5, kv_heads * head_dim
    # q, k and v as strided views of one qkv tensor, as in the model
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim).to(device, dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : heads * head_dim + width].view(tokens, kv_heads, head_dim)
    v = qkv[:, heads * head_dim + width :].view(tokens, kv_heads, head_dim)
    qkv_before = qkv.clone()
    positions = torch.randint(0, 512, (tokens,), device=device)
    ref_q, ref_k = rotate_half_split(positions, q, k, rope.cos_sin)
    cache = torch.randn(2, 7, PAGE, kv_heads, head_dim).to(device, dtype)
    before = cache.clone()
    slots = torch.tensor([3, 17, 95, -1, 40], device=device)  # -1: a padding row writes nothing
    q_out = torch.empty_like(q)

    rotary_store(positions, q, k, v, cache, slots, rope.cos_sin, q_out)

    torch.testing.assert_close(q_out.cpu().float(), ref_q, **tolerance(dtype))
    assert torch.equal(qkv, qkv_before)
    flat = cache.view(2, -1, kv_heads, head_dim)
    for i, slot in enumerate(slots.tolist()):
        if slot >= 0:
            torch.testing.assert_close(flat[0, slot].cpu().float(), ref_k[i], **tolerance(dtype))
            assert torch.equal(flat[1, slot], v[i])
    untouched = torch.ones(flat.shape[1], dtype=torch.bool)
    untouched[[3, 17, 95, 40]] = False
    assert torch.equal(flat[:, untouched], before.view(2, -1, kv_heads, head_dim)[:, untouched])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(32, 8, 64), (32, 8, 128), (32, 32, 128)])
def test_kernels_at_real_sizes(heads, kv_heads, head_dim):
    dtype, device = torch.bfloat16, "cuda"
    seq_lens = [*torch.randint(1, 4096, (48,)).tolist(), 4096, 16, 17, 0]
    for splits in (1, 8, 32):
        args, expected_cache, expected = decode_step(
            seq_lens, heads, kv_heads, head_dim, device, dtype, seed=heads + head_dim
        )
        out = decode_attention(*args, num_splits=splits)
        torch.testing.assert_close(out.cpu().float(), expected, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(args[3], expected_cache, atol=2e-2, rtol=2e-2)
    shapes = [(2048, 2048), (512, 3000), (1, 4000), (100, 100)]
    qlens, slens = [a for a, _ in shapes], [b for _, b in shapes]
    cache, tables = paged_setup(slens, kv_heads, head_dim, device, dtype, seed=5)
    q = torch.randn(sum(qlens), heads, head_dim, device=device, dtype=dtype)
    starts = torch.tensor([0, *torch.tensor(qlens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    out = prefill_attention(
        q,
        cache,
        tables,
        starts,
        torch.tensor(slens, dtype=torch.int32, device=device),
        max(qlens),
        head_dim**-0.5,
    )
    ref = reference(q, cache, tables, qlens, slens, head_dim**-0.5)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def at_offset(t: torch.Tensor, offset: int) -> torch.Tensor:
    """t copied `offset` elements into a fresh buffer: an address of another alignment, as the step
    inputs' slices of one upload have when the step's size changes."""
    buffer = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    view = buffer[offset:].view_as(t)
    view.copy_(t)
    return view


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_kernel_compiles_once_for_every_split_count_and_input_alignment():
    """A variant compiled after the warm-up would compile on a client's time (issue 24's cold start)."""
    from pyinfer.kernels.decode_attention import _decode_kernel

    dtype = torch.float16  # a dtype no other test launches: the first call compiles the one variant
    before = compiled_variants(_decode_kernel)
    for splits, offset in ((1, 0), (1, 1), (4, 1), (4, 0), (7, 3)):
        args, _, expected = decode_step([20, 300, 17], 8, 2, 64, "cuda", dtype, seed=7)
        q, k, v, cache, tables, seq_lens, slots, cos_sin, scale = args
        tables, seq_lens, slots = (at_offset(t, offset) for t in (tables, seq_lens, slots))
        out = decode_attention(q, k, v, cache, tables, seq_lens, slots, cos_sin, scale, num_splits=splits)
        torch.testing.assert_close(out.cpu().float(), expected, atol=2e-2, rtol=2e-2)
    assert compiled_variants(_decode_kernel) == before + 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pass_compiled_ahead_runs_no_kernel_and_then_compiles_none():
    """The start-up's passes run once within compiling_ahead: their launches only compile, all of
    them before it ends, so the pass run for real compiles nothing on a client's time."""
    from pyinfer.kernels.compile_ahead import compiling_ahead
    from pyinfer.kernels.prefill_attention import _prefill_kernel

    dtype = torch.float16  # a dtype no other prefill test launches: its variants are new here
    query_lens, seq_lens = [40, 3], [40, 19]
    cache, tables = paged_setup(seq_lens, 2, 64, "cuda", dtype, seed=11)
    q = torch.randn(sum(query_lens), 8, 64).to("cuda", dtype)
    starts = torch.tensor([0, 40, 43], dtype=torch.int32, device="cuda")
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    configs = [(16, 64, 4, 2), (64, 64, 4, 2)]  # two variants
    outs = [torch.zeros_like(q) for _ in configs]

    def attend() -> None:
        for config, out in zip(configs, outs, strict=True):
            prefill_attention(q, cache, tables, starts, lens, 40, 0.125, out=out, config=config)

    before = compiled_variants(_prefill_kernel)
    with compiling_ahead("a test"):
        attend()
    assert compiled_variants(_prefill_kernel) == before + 2
    assert all(not out.any() for out in outs)  # nothing ran
    attend()
    assert compiled_variants(_prefill_kernel) == before + 2
    ref = reference(q, cache, tables, query_lens, seq_lens, 0.125)
    for out in outs:
        torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_triton_backend_leaves_padding_rows_past_the_step_s_tokens_alone(device, dtype):
    """The model runner pads an eager step's token count on the GPU: the rows past the step's tokens
    neither write the cache nor change what the step's own rows attend to."""
    from pyinfer.attention.triton_backend import TritonAttentionBackend, TritonAttentionMetadata

    heads, kv_heads, head_dim = 8, 2, 64
    # a decode at position 8, a fresh 17-token prompt, a 5-token chunk after 35 cached tokens
    query_lens, seq_lens = [1, 17, 5], [9, 17, 40]
    cache, tables = paged_setup(seq_lens, kv_heads, head_dim, device, dtype, seed=3)
    tables = tables.long()
    positions, slots = [], []
    for i, (ql, sl) in enumerate(zip(query_lens, seq_lens, strict=True)):
        for pos in range(sl - ql, sl):
            positions.append(pos)
            slots.append(tables[i, pos // PAGE].item() * PAGE + pos % PAGE)
    tokens, padded = len(slots), 64
    backend = TritonAttentionBackend(kv_heads, torch.device(device))
    meta = TritonAttentionMetadata(  # one KV split: the interpreter has no SM count to size them by
        slot_mapping=torch.tensor(slots, device=device),
        seq_lens=torch.tensor(seq_lens, device=device),
        block_tables=tables,
        num_decodes=1,
        query_lens=query_lens,
        seq_lens_host=seq_lens,
        block_size=PAGE,
        query_start_loc=torch.tensor([0, 1, 18, 23], device=device),
        max_query_len=max(query_lens),
    )
    rotary = RotaryEmbedding(head_dim, 8192, 500000.0, LLAMA3_SCALING).to(device)
    gen = torch.Generator().manual_seed(4)
    qkv = torch.randn(padded, (heads + 2 * kv_heads) * head_dim, generator=gen).to(device, dtype)
    width = kv_heads * head_dim

    def attend(rows: int, kv_cache: torch.Tensor) -> torch.Tensor:
        q = qkv[:rows, : heads * head_dim].view(rows, heads, head_dim)
        k = qkv[:rows, heads * head_dim : heads * head_dim + width].view(rows, kv_heads, head_dim)
        v = qkv[:rows, heads * head_dim + width :].view(rows, kv_heads, head_dim)
        rope = torch.tensor(positions + [0] * (rows - tokens), device=device)
        return backend.forward(q, k, v, rope, rotary, kv_cache, meta, head_dim**-0.5)

    exact_cache, padded_cache = cache.clone(), cache.clone()
    exact = attend(tokens, exact_cache)
    with_padding = attend(padded, padded_cache)

    assert with_padding.shape[0] == padded
    torch.testing.assert_close(with_padding[:tokens], exact, atol=0, rtol=0)
    assert torch.equal(padded_cache, exact_cache)
