"""Triton kernels for the GPU hot path. Each has a PyTorch reference it is tested against."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

# Looked up, not imported: importing Triton costs a CPU-only process start-up time and, at exit, the
# nanobind leak report of its extension (the kernel modules import it where they are used).
HAS_TRITON = importlib.util.find_spec("triton") is not None

MAX_SPLITS = 32  # most KV splits of the decode attention kernel


def triton_enabled(x: torch.Tensor) -> bool:
    """Whether the layers use the Triton kernels for this tensor: on CUDA, unless PYINFER_DISABLE_TRITON=1."""
    return x.is_cuda and HAS_TRITON and os.environ.get("PYINFER_DISABLE_TRITON") != "1"


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact (ieee) dots, so that fp32 runs match the reference; others use tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"
