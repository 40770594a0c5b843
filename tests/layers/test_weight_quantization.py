"""Weight-only int8 / int4 quantization: the rounding bounds, the CPU kernels (torch's, and our integer
ones) against the dequantized matrix, and linears that swap their dense weight for quantized weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers import quantization
from pyinfer.layers.linear import ColumnParallelLinear, MergedColumnParallelLinear
from pyinfer.layers.quantization import (
    GROUP_SIZE,
    Int4Blocks,
    Int4Weights,
    Int8Blocks,
    Int8Weights,
    quantize,
    quantize_int4,
    quantize_int8,
)
from tests.quantization_reference import int4_dense, int8_codes, int8_dense, kernel_product, unpanel_scales


@pytest.fixture(params=["torch", "integer"])
def kernels(request, monkeypatch) -> str:
    """Runs a test with torch's int4/int8 CPU kernels, then with ours, whatever this CPU would pick."""
    if request.param == "integer" and cpu_ops() is None:
        pytest.skip("no C++ compiler: the integer kernels are not built")
    monkeypatch.setattr(quantization, "integer_kernels_wanted", lambda: request.param == "integer")
    return request.param


def random_weight(n: int = 96, k: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def test_int8_rounds_each_weight_to_its_nearest_step(kernels):
    """Per output channel for torch's kernel; per group of 32 inputs (fp16 scales, Q8_0) for ours."""
    w = random_weight()
    q = quantize_int8(w)
    if kernels == "integer":  # in panels of 16 rows, each code held as q + 128
        assert isinstance(q, Int8Blocks) and q.codes.shape == (96 // 16, 128 // GROUP_SIZE, 512)
        assert q.d.shape == (96 // 16, 128 // GROUP_SIZE, 16) and q.d.dtype == torch.float16
        groups = int8_codes(q).reshape(96, -1, GROUP_SIZE)
        assert (groups.abs().amax(-1) == 127).all()  # each group's largest weight sits on 127
        step = unpanel_scales(q.d, 96).float().repeat_interleave(GROUP_SIZE, dim=1)
    else:
        assert q.q.dtype == torch.int8
        assert q.scale.shape == (96,) and q.scale.dtype == w.dtype
        assert (q.q.abs().amax(-1) == 127).all()  # each row's largest weight sits on 127
        step = q.scale[:, None]
    assert ((int8_dense(q) - w).abs() <= step / 2 + 1e-7).all()


def test_int4_maps_each_group_min_max_onto_0_to_15():
    w = random_weight()
    shard = quantize_int4(w)
    assert shard.q.dtype == torch.uint8 and shard.q.shape == w.shape and shard.q.max() <= 15
    assert shard.scale.shape == shard.zero.shape == (96, 128 // GROUP_SIZE)
    step = shard.scale.repeat_interleave(GROUP_SIZE, dim=1)
    assert ((int4_dense(shard) - w).abs() <= step / 2 + 1e-6).all()
    groups = shard.q.reshape(96, -1, GROUP_SIZE)
    assert (groups.amin(-1) == 0).all() and (groups.amax(-1) == 15).all()


def test_zero_rows_and_constant_groups_come_back_exactly():
    w = random_weight(4, 64)
    w[0] = 0.0
    w[1, :GROUP_SIZE] = 0.25
    assert torch.equal(int8_dense(quantize_int8(w))[0], w[0])
    back = int4_dense(quantize_int4(w))
    assert torch.equal(back[0], w[0]) and torch.equal(back[1, :GROUP_SIZE], w[1, :GROUP_SIZE])


@pytest.mark.parametrize("method", ["int8", "int4"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_kernels_compute_x_times_the_dequantized_matrix(kernels, method, dtype, tol):
    w = random_weight().to(dtype)  # the model's dtype: scales come in it, as the kernels want
    weights = quantize(w, method)
    assert isinstance(weights, Int4Blocks) == (kernels == "integer" and method == "int4")
    dense = int8_dense(weights) if method == "int8" else int4_dense(quantize_int4(w))
    x = torch.randn(2, 5, 128).to(dtype)  # leading dimensions are kept
    out = weights.mm(x)
    assert out.shape == (2, 5, 96) and out.dtype == dtype and weights.out_features == 96
    ref = kernel_product(x, weights, dense)
    assert ((out.float() - ref).norm() / ref.norm()).item() < tol
    if kernels == "integer":  # int8 activations cost about 0.5% against the float product
        exact = x.float() @ dense.T
        assert ((out.float() - exact).norm() / exact.norm()).item() < 0.02


def test_descriptions_name_the_scheme(kernels):
    w = random_weight()
    assert quantize(w, "int8").description == ("int8 g32" if kernels == "integer" else "int8 per-channel")
    assert quantize(w, "int4").description == "int4 g32"
    with pytest.raises(ValueError, match="int8 or int4"):
        quantize(w, "int2")
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_int4(random_weight(8, 48))


@pytest.mark.parametrize(("method", "kind", "tol"), [("int8", Int8Weights, 0.01), ("int4", Int4Weights, 0.1)])
def test_linear_quantizes_in_place_and_drops_the_dense_weight(kernels, method, kind, tol):
    linear = ColumnParallelLinear(128, 96)
    w = random_weight()
    linear.weight.data.copy_(w)
    linear.quantize(method)
    assert isinstance(linear.quantized, kind) and linear.weight is None
    x = torch.randn(7, 128)
    ref = F.linear(x, w)
    assert ((linear(x) - ref).norm() / ref.norm()).item() < tol


def test_a_dense_shard_beside_int4_shards_is_quantized_not_lost(kernels):
    """A merged linear whose file stores one part in 4-bit blocks and another in a wider type."""
    linear = MergedColumnParallelLinear(128, {"gate": 64, "up": 64})
    gate, up = random_weight(64, 128, seed=1), random_weight(64, 128, seed=2)
    gate_blocks = quantize_int4(gate)
    linear.load_int4_shard(gate_blocks, "gate")
    linear.weight_loader(linear.weight, up, "up")
    linear.finish_int4()
    assert isinstance(linear.quantized, Int4Weights) and linear.weight is None
    x = torch.randn(3, 128)
    out = linear(x)
    dense = torch.cat([int4_dense(gate_blocks), int4_dense(quantize_int4(up))])  # up: as finish_int4 does
    expected = kernel_product(x, linear.quantized, dense)[:, :64]
    torch.testing.assert_close(out[:, :64], expected, rtol=1e-4, atol=1e-5)
    ref_up = x @ up.T
    assert ((out[:, 64:] - ref_up).norm() / ref_up.norm()).item() < 0.1
