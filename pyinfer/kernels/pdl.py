"""Programmatic dependent launch (Hopper and newer): a kernel's programs may start while the kernel
before it drains, and wait for it (pdl_wait) before touching anything it wrote. Work placed before the
wait, such as a GEMV loading its weights, overlaps the previous kernel's tail."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@functools.cache
def _hopper_or_newer(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def pdl_args(x: torch.Tensor) -> dict[str, bool]:
    """Launch arguments for a kernel on x's device: its USE_PDL and Triton's launch_pdl."""
    on = _hopper_or_newer(x.device)
    return {"USE_PDL": on, "launch_pdl": on}


@triton.jit
def pdl_wait(USE_PDL: tl.constexpr):
    """Waits until the previous kernel has finished and its writes are visible, then lets the next
    kernel start launching."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
