"""The batch-1 matrix-vector kernels (plain, RMSNorm before, SiLU-and-mul after) against the PyTorch layers."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.gemv import gemv, norm_gemv, use_gemv
from pyinfer.layers.activation import SiluAndMul
from pyinfer.layers.norm import RMSNorm
from tests.kernels.conftest import compiled_variants, tolerance

# (258, 2100): 65 tiles of 4 rows over the interpreter's 3 programs, 2 chunks of K each, so the prefetch
# of the next chunk crosses both chunks and tiles; the others are one chunk (K <= 2048) of odd widths.


@pytest.mark.parametrize(("n", "k"), [(1, 64), (37, 96), (130, 576), (258, 1000), (258, 2100)])
def test_gemv_matches_matmul_on_odd_shapes(n, k, device, dtype):
    x = torch.randn(1, k).to(device, dtype)
    weight = (torch.randn(n, k) / k**0.5).to(device, dtype)
    torch.testing.assert_close(gemv(x, weight), x @ weight.T, **tolerance(dtype))


def test_gemv_reads_a_row_view_and_keeps_leading_dims(device, dtype):
    rows = torch.randn(3, 160).to(device, dtype)
    x = rows[1:2, 32:]  # strided view of one row
    weight = (torch.randn(70, 128) / 128**0.5).to(device, dtype)
    torch.testing.assert_close(gemv(x, weight), x @ weight.T, **tolerance(dtype))
    assert gemv(x.view(1, 1, 128), weight).shape == (1, 1, 70)


@pytest.mark.parametrize(("n", "k"), [(37, 96), (130, 576), (258, 1000), (258, 2100)])
def test_norm_gemv_matches_rms_norm_then_matmul(n, k, device, dtype):
    norm = RMSNorm(k, 1e-5).to(device, dtype)
    norm.weight.data = (torch.rand(k) + 0.5).to(device, dtype)
    x, residual = torch.randn(1, k).to(device, dtype), torch.randn(1, k).to(device, dtype)
    weight = (torch.randn(n, k) / k**0.5).to(device, dtype)

    y, same = norm_gemv(x, None, norm.weight, norm.eps, weight)
    torch.testing.assert_close(y, norm(x) @ weight.T, **tolerance(dtype))
    assert same is x

    y, new_residual = norm_gemv(x, residual, norm.weight, norm.eps, weight)
    ref_x, ref_residual = norm(x, residual)
    torch.testing.assert_close(new_residual, ref_residual, **tolerance(dtype))
    torch.testing.assert_close(y, ref_x @ weight.T, **tolerance(dtype))


@pytest.mark.parametrize(("n", "k"), [(37, 96), (130, 700), (258, 2100)])
def test_gated_norm_gemv_matches_norm_matmul_then_silu_and_mul(n, k, device, dtype):
    """A [gate; up] weight of 2n rows: n outputs, SiLU(gate) * up, each from a gate row and its up row."""
    norm = RMSNorm(k, 1e-5).to(device, dtype)
    norm.weight.data = (torch.rand(k) + 0.5).to(device, dtype)
    x, residual = torch.randn(1, k).to(device, dtype), torch.randn(1, k).to(device, dtype)
    weight = (torch.randn(2 * n, k) / k**0.5).to(device, dtype)
    y, new_residual = norm_gemv(x, residual, norm.weight, norm.eps, weight, gated=True)
    ref_x, ref_residual = norm(x, residual)
    assert y.shape == (1, n)
    torch.testing.assert_close(new_residual, ref_residual, **tolerance(dtype))
    torch.testing.assert_close(y, SiluAndMul()(ref_x @ weight.T), **tolerance(dtype))


def test_eight_row_tiles_with_a_partial_last_tile(device, dtype, monkeypatch):
    """8-row tiles (the LM heads'): 37 rows end in a tile of 5; 37 gated outputs, 4 a tile, in a tile of 1."""
    import pyinfer.kernels.gemv as gemv_module

    monkeypatch.setattr(gemv_module, "_config", lambda n, k: (8, 128, 4, 4))
    k = 200  # two chunks of 128
    norm = RMSNorm(k, 1e-5).to(device, dtype)
    norm.weight.data = (torch.rand(k) + 0.5).to(device, dtype)
    x = torch.randn(1, k).to(device, dtype)
    weight = (torch.randn(74, k) / k**0.5).to(device, dtype)
    torch.testing.assert_close(gemv(x, weight[:37]), x @ weight[:37].T, **tolerance(dtype))
    y, _ = norm_gemv(x, None, norm.weight, norm.eps, weight, gated=True)
    assert y.shape == (1, 37)
    torch.testing.assert_close(y, SiluAndMul()(norm(x) @ weight.T), **tolerance(dtype))


@pytest.mark.gpu
def test_gemv_is_chosen_for_one_row_in_a_captured_graph_only():
    weight = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, 128, device="cuda", dtype=torch.bfloat16)
    assert not use_gemv(x, weight)  # eager: cuBLAS, cheaper to launch from Python
    gemv(x, weight)  # compile outside the capture
    chosen = []
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chosen.append(use_gemv(x, weight))
        chosen.append(use_gemv(torch.randn(2, 128, device="cuda", dtype=torch.bfloat16), weight))
        chosen.append(use_gemv(x, None))
    assert chosen == [True, False, False]  # one row; two rows and quantized weights keep their matmul


@pytest.mark.gpu
def test_a_pass_compiled_ahead_of_capture_compiles_the_capture_s_gemv():
    """The CUDA graphs' pass compiled ahead chooses the kernels their capture chooses: the one-row GEMV's
    variants compile before the capture, not one by one inside it."""
    from pyinfer.kernels.compile_ahead import compiling_ahead
    from pyinfer.kernels.gemv import _gemv_kernel

    weight = torch.randn(64, 128, device="cuda", dtype=torch.float16)  # fp16: a variant no test compiled
    x = torch.randn(1, 128, device="cuda", dtype=torch.float16)

    def product() -> torch.Tensor:
        return gemv(x, weight) if use_gemv(x, weight) else x @ weight.T

    before = compiled_variants(_gemv_kernel)
    with compiling_ahead("a test"):  # not ahead of a capture: the eager choice, cuBLAS
        product()
    assert compiled_variants(_gemv_kernel) == before
    with compiling_ahead("a test", for_capture=True):
        product()
    assert compiled_variants(_gemv_kernel) == before + 1
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = product()
    assert compiled_variants(_gemv_kernel) == before + 1
    graph.replay()
    torch.testing.assert_close(y.float(), x.float() @ weight.float().T, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), [(3072, 2048), (128256, 2048), (28672, 4096), (4096, 14336)])
def test_gemv_real_sizes(n, k):
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
    ref = (x.float() @ weight.float().T).to(torch.bfloat16)
    torch.testing.assert_close(gemv(x, weight), ref, atol=2e-2, rtol=2e-2)
    norm = RMSNorm(k, 1e-5).to("cuda", torch.bfloat16)
    norm.weight.data.uniform_(0.5, 1.5)
    residual = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    y, new_residual = norm_gemv(x, residual, norm.weight, norm.eps, weight)
    ref_x, ref_residual = norm(x, residual)
    assert torch.equal(new_residual, ref_residual)
    ref = (ref_x.float() @ weight.float().T).to(torch.bfloat16)
    torch.testing.assert_close(y, ref, atol=3e-2, rtol=3e-2)
    y, _ = norm_gemv(x, residual, norm.weight, norm.eps, weight, gated=True)
    gate, up = ref.float().chunk(2, dim=-1)
    torch.testing.assert_close(y.float(), torch.nn.functional.silu(gate) * up, atol=3e-2, rtol=3e-2)
