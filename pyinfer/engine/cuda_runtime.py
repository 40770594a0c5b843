"""The CUDA runtime library torch loaded, for the calls torch does not wrap."""

from __future__ import annotations

import ctypes
import functools
import os

import torch


@functools.cache
def cuda_runtime() -> ctypes.CDLL | None:
    """The copy torch loaded, found by its soname: never a second one, whose state (its last error, say)
    would not be torch's. None without CUDA, or where torch's copy has no such name (linked statically)."""
    if not torch.version.cuda:
        return None
    try:
        return ctypes.CDLL(f"libcudart.so.{torch.version.cuda.split('.')[0]}", mode=os.RTLD_NOLOAD)
    except OSError:
        return None
