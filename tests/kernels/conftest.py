"""Kernel tests run on the GPU when there is one, else on the CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")  # TRITON_INTERPRET=1 is set by the root conftest when there is no GPU


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def dtype() -> torch.dtype:
    # bf16 on the GPU; fp32 in the interpreter (numpy has no bf16)
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def compiled_variants(kernel) -> int:
    """Variants of a Triton kernel compiled in this process, on every device."""
    return sum(len(caches[0]) for caches in kernel.device_caches.values())


def tolerance(dtype: torch.dtype) -> dict:
    return {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}


def rotate_half_split(positions, q, k, cos_sin):
    """The textbook rotation of the half-split layout, on the CPU in fp32."""
    cos, sin = cos_sin.cpu()[positions.cpu()].unsqueeze(1).chunk(2, dim=-1)

    def rotate(x):
        x1, x2 = x.cpu().float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    return rotate(q), rotate(k)
