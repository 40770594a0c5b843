"""The C++ CPU kernels (pyinfer/csrc) against the PyTorch paths they replace."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.attention.torch_backend import (
    TorchAttentionBackend,
    batched_decode,
    decode_blocks_and_mask,
    gather_kv,
)
from pyinfer.kernels.cpu import cpu_has_bf16, cpu_ops
from pyinfer.layers import quantization
from pyinfer.layers.norm import RMSNorm
from pyinfer.layers.quantization import (
    BLOCKS_DENSE_MIN_ROWS,
    DENSE_MIN_ROWS,
    GROUP_SIZE,
    Int4Blocks,
    Int8Blocks,
    TorchInt4Weights,
    int4_unpack_matches_torch,
    quantize_int4,
    quantize_int8,
)
from pyinfer.layers.rotary import RotaryEmbedding
from tests.kernels.conftest import rotate_half_split
from tests.quantization_reference import (
    blocks_dense,
    int4_dense,
    int8_activations,
    int8_dense,
    kernel_product,
)

ops = cpu_ops()
pytestmark = pytest.mark.skipif(ops is None, reason="no C++ compiler: the PyTorch paths run instead")
PAGE = 16


def paged_decode_case(seq_lens, num_heads, num_kv_heads, head_dim, dtype, seed):
    """A head-major paged cache with each sequence's pages shuffled, and the metadata of one decode step."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [-(-n // PAGE) for n in seq_lens]
    perm = torch.randperm(sum(blocks) + 2, generator=gen).tolist()
    width, tables, i = max(blocks), [], 0
    for n in blocks:
        tables.append(perm[i : i + n] + [0] * (width - n))
        i += n
    cache = torch.randn(2, num_kv_heads, len(perm), PAGE, head_dim, generator=gen).to(dtype)
    q = torch.randn(len(seq_lens), num_heads, head_dim, generator=gen).to(dtype)
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.long),
        seq_lens=torch.tensor(seq_lens),
        block_tables=torch.tensor(tables),
        num_decodes=len(seq_lens),
        query_lens=[1] * len(seq_lens),
        seq_lens_host=list(seq_lens),
        block_size=PAGE,
    )
    return q, cache, meta


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim"), [(4, 4, 64), (9, 3, 64), (32, 8, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_matches_batched_matmuls(num_heads, num_kv_heads, head_dim, dtype):
    seq_lens = [1, 15, 16, 17, 33, 200]  # one token, page boundaries, a long one
    q, cache, meta = paged_decode_case(seq_lens, num_heads, num_kv_heads, head_dim, dtype, seed=num_heads)
    out = ops.decode_attention(q, cache, meta.block_tables, meta.seq_lens, head_dim**-0.5)
    ref = batched_decode(q, cache, decode_blocks_and_mask(meta), head_dim**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.bfloat16])
def test_decode_attention_reads_a_narrower_cache_under_float32_queries(head_dim, cache_dtype):
    """--kv-cache-dtype: an fp32 model over an fp16 (the CPU's default) or bf16 cache, read as the same
    values widened to fp32; other mixtures are refused."""
    q, cache, meta = paged_decode_case([1, 17, 200], 9, 3, head_dim, torch.float32, seed=head_dim)
    narrow = cache.to(cache_dtype)
    out = ops.decode_attention(q, narrow, meta.block_tables, meta.seq_lens, head_dim**-0.5)
    ref = batched_decode(q, narrow.float(), decode_blocks_and_mask(meta), head_dim**-0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="float32 queries"):
        ops.decode_attention(q.bfloat16(), cache.half(), meta.block_tables, meta.seq_lens, 0.125)


def test_store_kv_narrows_float32_rows_into_an_fp16_cache():
    cache = torch.zeros(2, 3, 4, PAGE, 64, dtype=torch.float16)
    k, v = torch.randn(5, 3, 64), torch.randn(5, 3, 64)
    slots = torch.tensor([0, 17, 18, 63, 40])
    ops.store_kv(cache, k, v, slots)
    flat = cache.view(2, 3, -1, 64)
    assert torch.equal(flat[0][:, slots], k.half().transpose(0, 1))  # rounded as torch rounds
    assert torch.equal(flat[1][:, slots], v.half().transpose(0, 1))
    with pytest.raises(RuntimeError, match="float32 ones"):
        ops.store_kv(cache.bfloat16(), k.half(), v.half(), slots)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_splits_long_contexts_into_spans(dtype):
    """Long contexts are cut into spans of keys (about 4 tasks a thread, at least 64 keys), whose softmax
    partials are merged. On 2 threads a 2,000-token context makes 2 spans beside short sequences, and 3
    alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, cache, meta = paged_decode_case([2000, 5, 700], 9, 3, 64, dtype, seed=7)
        out = ops.decode_attention(q, cache, meta.block_tables, meta.seq_lens, 0.125)
        alone = ops.decode_attention(q[:1], cache, meta.block_tables[:1], meta.seq_lens[:1], 0.125)
    finally:
        torch.set_num_threads(threads)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(
        out, batched_decode(q, cache, decode_blocks_and_mask(meta), 0.125), atol=tol, rtol=tol
    )
    torch.testing.assert_close(alone, out[:1], atol=tol, rtol=tol)


def test_decode_attention_reads_strided_queries():
    q, cache, meta = paged_decode_case([40, 7], 9, 3, 64, torch.bfloat16, seed=1)
    qkv = torch.cat([q.flatten(1), torch.randn(2, 5 * 64).bfloat16()], dim=1)
    strided = qkv[:, : 9 * 64].view(2, 9, 64)  # how the model hands q over: a view into qkv
    out = ops.decode_attention(strided, cache, meta.block_tables, meta.seq_lens, 0.125)
    torch.testing.assert_close(
        out, batched_decode(q, cache, decode_blocks_and_mask(meta), 0.125), atol=1e-2, rtol=1e-2
    )


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
def test_the_backend_runs_every_row_of_a_mixed_step_through_the_decode_kernel(cache_dtype):
    """Two decodes, a fresh prompt and a chunk after a cached prefix in one step: through the C++ kernel
    each prompt row is a decode over the keys up to its own position, as the plain torch path (causal
    attention over the keys as the cache holds them) computes it."""
    cached, new = [40, 7, 0, 30], [1, 1, 23, 17]  # tokens in the cache before the step, and this step's
    spans = [range(c, c + n) for c, n in zip(cached, new, strict=True)]  # each sequence's new positions
    num_heads, num_kv_heads, dim = 9, 3, 64
    gen = torch.Generator().manual_seed(3)
    width = max(-(-span.stop // PAGE) for span in spans)
    tables = torch.arange(len(spans) * width).view(len(spans), width).flip(0)  # pages out of order
    slots = [tables[i, t // PAGE] * PAGE + t % PAGE for i, span in enumerate(spans) for t in span]
    meta = dict(
        slot_mapping=torch.tensor(slots),
        seq_lens=torch.tensor([span.stop for span in spans]),
        block_tables=tables,
        num_decodes=2,
        query_lens=new,
        seq_lens_host=[span.stop for span in spans],
        block_size=PAGE,
    )
    rotary = RotaryEmbedding(dim, 512, 10000.0, None)
    positions = torch.tensor([t for span in spans for t in span])
    rope = rotary.prepare(positions, torch.float32)
    tokens = sum(new)
    q = torch.randn(tokens, num_heads, dim, generator=gen)
    k, v = torch.randn(2, tokens, num_kv_heads, dim, generator=gen)
    cache = torch.randn(2, num_kv_heads, len(spans) * width, PAGE, dim, generator=gen).to(cache_dtype)
    outs = []
    for cpp in (True, False):
        backend = TorchAttentionBackend(dim, torch.device("cpu"))
        backend.cpp_kernel = cpp
        outs.append(
            backend.forward(
                q.clone(), k.clone(), v, rope, rotary, cache.clone(), backend.build_metadata(**meta), 0.125
            )
        )
    assert outs[0].shape == (tokens, num_heads, dim)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    ops is None or not int4_unpack_matches_torch(), reason="torch packs int4 in another layout here"
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("n", "k"), [(64, 32), (192, 576), (128, 1536)])
def test_int4_unpack_reproduces_the_quantized_weights(n, k, dtype):
    shard = quantize_int4(torch.randn(n, k, generator=torch.Generator().manual_seed(n)) * 0.05)
    weights = TorchInt4Weights(shard, dtype)
    dense = ops.int4_unpack(weights.packed, weights.scales_and_zeros, GROUP_SIZE)
    groups = lambda t: t.to(dtype).float().repeat_interleave(GROUP_SIZE, dim=1)  # noqa: E731
    expected = (shard.q.float() - 8) * groups(shard.scale) + groups(shard.zero)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(dense.float(), expected, atol=tol, rtol=tol)


@pytest.mark.skipif(
    ops is None or not int4_unpack_matches_torch(), reason="torch packs int4 in another layout here"
)
def test_int4_prefill_rows_take_the_dense_path_with_the_same_result(monkeypatch):
    weights = TorchInt4Weights(quantize_int4(torch.randn(192, 576) * 0.05), torch.bfloat16)
    x = torch.randn(DENSE_MIN_ROWS, 576).bfloat16()
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(
        x, weights.packed, GROUP_SIZE, weights.scales_and_zeros
    )
    assert int4_unpack_matches_torch()  # its one-time check unpacks too: done before counting
    unpacks = []
    unpack = ops.int4_unpack
    monkeypatch.setattr(ops, "int4_unpack", lambda *args: unpacks.append(1) or unpack(*args))
    out = weights.mm(x)
    assert unpacks == [1]  # prefill-sized: unpacked for a dense GEMM
    assert ((out.float() - kernel.float()).norm() / kernel.float().norm()).item() < 1e-2
    torch.testing.assert_close(weights.mm(x[:5]), kernel[:5])  # decode-sized: the int4 kernel itself
    assert unpacks == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 16, 130])
def test_rms_norm_with_and_without_residual(rows, dtype):
    norm = RMSNorm(576, 1e-5).to(dtype)
    norm.weight.data = (torch.rand(576) + 0.5).to(dtype)
    x, res = torch.randn(rows, 576).to(dtype), torch.randn(rows, 576).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ops.rms_norm(x, None, norm.weight, 1e-5)[0], norm._norm(x), atol=tol, rtol=tol)
    out, new_res = ops.rms_norm(x, res, norm.weight, 1e-5)
    torch.testing.assert_close(new_res, x + res, atol=0, rtol=0)
    torch.testing.assert_close(out, norm._norm(x + res), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul_on_a_strided_view(dtype):
    x = torch.randn(9, 2 * 1536 + 64).to(dtype)[:, 64:]  # rows with a stride wider than 2N
    gate, up = x.chunk(2, dim=-1)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ops.silu_and_mul(x), torch.nn.functional.silu(gate) * up, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_in_place_leaves_v_alone(dtype):
    rope = RotaryEmbedding(64, 512, 10000.0, None)
    qkv = torch.randn(13, 15 * 64).to(dtype)
    q, k = qkv[:, : 9 * 64].view(13, 9, 64), qkv[:, 9 * 64 : 12 * 64].view(13, 3, 64)
    v_before = qkv[:, 12 * 64 :].clone()
    positions = torch.randint(0, 512, (13,))
    ref_q, ref_k = rotate_half_split(positions, q, k, rope.cos_sin)
    ops.rotary_(positions, q, k, rope.cos_sin)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(q.float(), ref_q, atol=tol, rtol=tol)
    torch.testing.assert_close(k.float(), ref_k, atol=tol, rtol=tol)
    assert torch.equal(qkv[:, 12 * 64 :], v_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_kv_writes_each_token_to_its_slot(dtype):
    cache = torch.zeros(2, 3, 6, PAGE, 64, dtype=dtype)
    kv = torch.randn(5, 12, 64).to(dtype)  # strided k and v views, as the model hands them over
    k, v = kv[:, 3:6], kv[:, 6:9]
    slots = torch.tensor([5 * PAGE + 3, 0, 17, 2 * PAGE + 15, 40])
    ops.store_kv(cache, k, v, slots)
    pages = torch.arange(6)
    keys, values = gather_kv(cache, pages, 6 * PAGE, PAGE, dtype)  # [L, Hk, D] in slot order
    assert torch.equal(keys[slots], k) and torch.equal(values[slots], v)
    untouched = torch.ones(6 * PAGE, dtype=torch.bool)
    untouched[slots] = False
    assert not keys[untouched].any() and not values[untouched].any()


def test_bad_inputs_raise_instead_of_reading_out_of_bounds():
    q, cache, meta = paged_decode_case([20, 5], 4, 2, 64, torch.float32, seed=3)
    with pytest.raises(RuntimeError, match="outside its block table"):
        ops.decode_attention(q, cache, meta.block_tables, torch.tensor([20, 0]), 0.125)
    bad_tables = meta.block_tables.clone()
    bad_tables[0, 1] = cache.shape[2]
    with pytest.raises(RuntimeError, match="outside the KV cache"):
        ops.decode_attention(q, cache, bad_tables, meta.seq_lens, 0.125)
    with pytest.raises(RuntimeError, match="multiple"):
        ops.decode_attention(q[:, :3], cache, meta.block_tables, meta.seq_lens, 0.125)
    k = torch.randn(2, 2, 64)
    with pytest.raises(RuntimeError, match="outside the KV cache"):
        ops.store_kv(cache, k, k, torch.tensor([0, cache.shape[2] * PAGE]))
    rope = RotaryEmbedding(64, 32, 10000.0, None)
    with pytest.raises(RuntimeError, match="beyond the rotary table"):
        ops.rotary_(torch.tensor([3, 32]), torch.randn(2, 4, 64), torch.randn(2, 2, 64), rope.cos_sin)


def test_int4_layout_check_rejects_another_packing(monkeypatch):
    """On CPUs where torch packs int4 differently, prefill must keep the int4 kernel, not misread."""
    int4_unpack_matches_torch.cache_clear()

    def adjacent_pairs(q: torch.Tensor, _: int) -> torch.Tensor:  # the same shape, another layout
        return (q[:, ::2] | (q[:, 1::2] << 4)).to(torch.uint8)

    monkeypatch.setattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", adjacent_pairs)
    try:
        assert not int4_unpack_matches_torch()
    finally:
        int4_unpack_matches_torch.cache_clear()


def int4_blocks_case(n: int, k: int, seed: int) -> tuple[Int4Blocks, torch.Tensor]:
    """4-bit blocks of a random [n, k] weight, and the dense matrix they stand for."""
    shard = quantize_int4(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05)
    blocks = Int4Blocks(shard)
    # d and m in fp16 (11-bit mantissas) move each weight by a few percent of its group's step at most
    step = shard.scale.repeat_interleave(GROUP_SIZE, dim=1)
    assert ((blocks_dense(blocks) - int4_dense(shard)).abs() <= step / 20).all()
    return blocks, blocks_dense(blocks)


@pytest.mark.parametrize(("n", "k"), [(1, 32), (37, 96), (192, 576), (130, 1536)])
def test_int4_blocks_dequantize_to_the_quantized_weights(n, k):
    blocks, dense = int4_blocks_case(n, k, seed=n)
    torch.testing.assert_close(
        ops.int4_blocks_dequantize(blocks.codes, blocks.d, blocks.m, n, torch.float32), dense
    )
    as_bf16 = ops.int4_blocks_dequantize(blocks.codes, blocks.d, blocks.m, n, torch.bfloat16)
    assert as_bf16.dtype == torch.bfloat16 and torch.equal(as_bf16, dense.bfloat16())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# tiles of 16 activation rows (AVX-512), of 4, and single rows, alone and after one another
@pytest.mark.parametrize("rows", [1, 3, 4, 9, 16, 37])
@pytest.mark.parametrize(("n", "k"), [(37, 96), (192, 576), (64, 1536)])
def test_integer_matmuls_match_their_rounding_in_torch(rows, n, k, dtype, monkeypatch):
    """int8-rounded activations (per group of 32) against the 4-bit codes, the blocks' minimum against
    x's exact group sums; int8 blocks with a scale per group. Strided x rows and an all-zero row included."""
    monkeypatch.setattr(quantization, "integer_kernels_wanted", lambda: True)  # the weights in our layouts
    gen = torch.Generator().manual_seed(rows * n)
    x = torch.randn(rows, k + 32, generator=gen).to(dtype)[:, :k]  # rows strided by k + 32
    if rows > 1:
        x[-1] = 0.0
    blocks, dense = int4_blocks_case(n, k, seed=rows)
    expected = kernel_product(x, blocks, dense)
    out = ops.int4_blocks_mm(x, blocks.codes, blocks.d, blocks.m, n)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and out.shape == (rows, n)
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)
    assert x.stride(0) == k + 32 and (rows == 1 or not out[-1].any())
    q8 = quantize_int8(torch.randn(n, k, generator=gen) * 0.05)
    assert isinstance(q8, Int8Blocks) and q8.d.shape == (-(-n // 16), k // GROUP_SIZE, 16)
    out = ops.int8_blocks_mm(x, q8.codes, q8.d, n)
    torch.testing.assert_close(out.float(), int8_activations(x) @ int8_dense(q8).T, atol=tol, rtol=tol)


def test_int4_blocks_take_a_float_gemm_from_prefill_sized_chunks(monkeypatch):
    blocks, dense = int4_blocks_case(192, 576, seed=5)
    x = torch.randn(BLOCKS_DENSE_MIN_ROWS, 576)
    dequantized = []
    dequantize = ops.int4_blocks_dequantize
    monkeypatch.setattr(ops, "int4_blocks_dequantize", lambda *a: dequantized.append(1) or dequantize(*a))
    if cpu_has_bf16():  # a bf16 GEMM where the processor has one
        torch.testing.assert_close(blocks.mm(x), F.linear(x.bfloat16(), dense.bfloat16()).float())
    else:  # exact: no int8 rounding
        torch.testing.assert_close(blocks.mm(x), x @ dense.T, atol=1e-4, rtol=1e-4)
    assert dequantized == [1]
    decode = blocks.mm(x[:5])  # decode-sized: the integer kernel
    assert dequantized == [1] and ((decode - x[:5] @ dense.T).norm() / decode.norm()).item() < 0.02


def test_integer_matmuls_reject_mismatched_shapes():
    blocks, _ = int4_blocks_case(64, 96, seed=0)
    with pytest.raises(RuntimeError, match="x has 64 inputs, the weights 96"):
        ops.int4_blocks_mm(torch.randn(2, 64), blocks.codes, blocks.d, blocks.m, 64)
    with pytest.raises(RuntimeError, match="scales must be"):
        ops.int4_blocks_mm(torch.randn(2, 96), blocks.codes, blocks.d[:, :2].contiguous(), blocks.m, 64)
    with pytest.raises(RuntimeError, match="scales must be contiguous fp16"):
        ops.int4_blocks_dequantize(blocks.codes, blocks.d.float(), blocks.m, 64, torch.float32)
    with pytest.raises(RuntimeError, match="codes must be contiguous uint8"):  # 65 rows take 5 panels
        ops.int4_blocks_mm(torch.randn(2, 96), blocks.codes, blocks.d, blocks.m, 65)
    q8 = quantize_int8(torch.randn(8, 96))
    with pytest.raises(RuntimeError, match="scales must be"):
        ops.int8_blocks_mm(torch.randn(2, 96), q8.codes, q8.d[:, :2].contiguous(), 8)
    with pytest.raises(RuntimeError, match="unit column stride"):
        ops.int8_blocks_mm(torch.randn(96, 2).T, q8.codes, q8.d, 8)


def test_the_measured_int4_path_is_kept_per_kernel_source_and_the_environment_overrides_it(
    monkeypatch, tmp_path
):
    from pyinfer.kernels import cpu

    monkeypatch.delenv("PYINFER_INTEGER_KERNELS", raising=False)
    monkeypatch.setattr(cpu, "_choice_record", lambda: tmp_path / "integer_kernels.json")
    assert cpu.integer_kernels_choice() is None  # nothing measured: integer_kernels_wanted takes ours
    cpu.record_integer_kernels_choice(False, {"ours_ms_batch1": 7.0, "torch_ms_batch1": 5.0})
    assert cpu.integer_kernels_choice() is False
    monkeypatch.setenv("PYINFER_INTEGER_KERNELS", "1")
    assert cpu.integer_kernels_choice() is True
    monkeypatch.delenv("PYINFER_INTEGER_KERNELS")
    monkeypatch.setattr(cpu, "_source_hash", lambda: "a changed kernel")
    assert cpu.integer_kernels_choice() is None


def test_a_chunk_failing_on_any_thread_raises_in_the_caller():
    cache = torch.zeros(2, 2, 4, PAGE, 64)
    k = torch.randn(512, 2, 64)
    slots = torch.arange(512) % (4 * PAGE)
    slots[-1] = 4 * PAGE  # in the last chunk, which any of the pool's threads may take
    with pytest.raises(RuntimeError, match="outside the KV cache"):
        ops.store_kv(cache, k, k, slots)


FORKED_CHILD = """
import os, sys, torch
from pyinfer.kernels.cpu import cpu_ops
ops, x = cpu_ops(), torch.randn(64, 1024)
expected = ops.silu_and_mul(x)  # starts the pool's threads here
pid = os.fork()
if pid == 0:  # the child inherits the pool without its threads, then leaves through a normal exit
    sys.exit(0 if torch.equal(ops.silu_and_mul(x), expected) else 3)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_forked_child_runs_the_kernels_and_exits_normally():
    """The child's loops get threads of their own, and its exit (C++ static destructors included) waits on
    none of the parent's, which it does not have."""
    done = subprocess.run([sys.executable, "-c", FORKED_CHILD], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
