"""Fused norm, rotary and SiLU kernels against the PyTorch layers they replace."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.elementwise import rms_norm, rotary_, silu_and_mul
from pyinfer.layers.norm import RMSNorm
from pyinfer.layers.rotary import RotaryEmbedding
from tests.kernels.conftest import rotate_half_split, tolerance


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


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 64), (9, 3, 64), (32, 8, 128)])
def test_rotary_in_place_on_strided_views(heads, kv_heads, head_dim, device, dtype):
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    rope = RotaryEmbedding(head_dim, 512, 500000.0, scaling).to(device)
    tokens = 11
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim).to(device, dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    v_before = qkv[:, (heads + kv_heads) * head_dim :].clone()
    positions = torch.randint(0, 512, (tokens,), device=device)
    ref_q, ref_k = rotate_half_split(positions, q, k, rope.cos_sin)
    rotary_(positions, q, k, rope.cos_sin)
    torch.testing.assert_close(q.cpu().float(), ref_q, **tolerance(dtype))
    torch.testing.assert_close(k.cpu().float(), ref_k, **tolerance(dtype))
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim :], v_before)


@pytest.mark.parametrize("width", [160, 1536 * 2])
def test_silu_and_mul(width, device, dtype):
    x = torch.randn(5, width).to(device, dtype)
    gate, up = x.float().chunk(2, -1)
    torch.testing.assert_close(
        silu_and_mul(x).float(), torch.nn.functional.silu(gate) * up, **tolerance(dtype)
    )
