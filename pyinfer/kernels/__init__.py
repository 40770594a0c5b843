"""Triton kernels for the GPU hot path. Each has a PyTorch reference it is tested against."""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # CPU-only installs without triton use the PyTorch paths
    HAS_TRITON = False


def triton_enabled(x: torch.Tensor) -> bool:
    """Use the Triton kernels for this tensor: on CUDA, or anywhere under TRITON_INTERPRET=1 (tests)."""
    if not HAS_TRITON or os.environ.get("PYINFER_DISABLE_TRITON") == "1":
        return False
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
