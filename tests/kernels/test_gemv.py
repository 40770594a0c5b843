"""The batch-1 matrix-vector kernel against torch's matmul."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.gemv import gemv, use_gemv
from tests.kernels.conftest import tolerance


@pytest.mark.parametrize(("n", "k"), [(1, 64), (37, 96), (130, 576), (258, 1000)])
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
        chosen.append(use_gemv(torch.randn(1, 256, device="cuda"), torch.randn(64, 256, device="cuda")))
    assert chosen == [True, False, False]  # one row; two rows and a tall-K matrix keep cuBLAS


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), [(3072, 2048), (128256, 2048), (28672, 4096)])
def test_gemv_real_sizes(n, k):
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
    ref = (x.float() @ weight.float().T).to(torch.bfloat16)
    torch.testing.assert_close(gemv(x, weight), ref, atol=2e-2, rtol=2e-2)
