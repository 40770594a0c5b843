"""The CUDA runtime library torch loaded, for the calls torch does not wrap."""

from __future__ import annotations

import ctypes
import functools

import torch


@functools.cache
def cuda_runtime() -> ctypes.CDLL | None:
    """By its soname, hence the library already loaded; None without CUDA or where it is not found."""
    if not torch.version.cuda:
        return None
    try:
        return ctypes.CDLL(f"libcudart.so.{torch.version.cuda.split('.')[0]}")
    except OSError:
        return None
