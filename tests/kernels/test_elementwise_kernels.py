"""Fused norm and SiLU kernels against the PyTorch layers they replace."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.elementwise import rms_norm, silu_and_mul
from pyinfer.layers.norm import RMSNorm
from tests.kernels.conftest import tolerance


@pytest.mark.parametrize("hidden", [64, 576, 2048])
def test_rms_norm_with_and_without_residual(hidden, device, dtype):
    norm = RMSNorm(hidden, 1e-5).to(device, dtype)
    norm.weight.data = torch.rand(hidden).to(device, dtype) + 0.5
    x, res = torch.randn(7, hidden).to(device, dtype), torch.randn(7, hidden).to(device, dtype)
    torch.testing.assert_close(rms_norm(x, norm.weight, 1e-5), norm._norm(x), **tolerance(dtype))
    out, new_res = rms_norm(x, norm.weight, 1e-5, res)
    ref_out, ref_res = norm._norm(x + res), x + res
    torch.testing.assert_close(out, ref_out, **tolerance(dtype))
    torch.testing.assert_close(new_res, ref_res, **tolerance(dtype))


@pytest.mark.parametrize("width", [160, 1536 * 2])
def test_silu_and_mul(width, device, dtype):
    x = torch.randn(5, width).to(device, dtype)
    gate, up = x.float().chunk(2, -1)
    torch.testing.assert_close(
        silu_and_mul(x).float(), torch.nn.functional.silu(gate) * up, **tolerance(dtype)
    )
