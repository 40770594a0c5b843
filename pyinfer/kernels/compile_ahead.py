"""Compiling a pass's Triton kernel variants together, on a thread pool, before the pass runs.

Triton compiles a variant at its first launch, so a start-up's passes (the KV cache sizing's prefill,
each CUDA graph's warm-up) compiled theirs one after another on one core. A pass run once within
`compiling_ahead()` launches nothing: each launch hands its variant to Triton's asynchronous compile
mode instead, the compiles run side by side (ptxas is a process of its own), and on leaving, every
variant is in Triton's in-memory cache. Run again outside, the pass then compiles nothing."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

import torch

log = logging.getLogger(__name__)

MAX_COMPILE_THREADS = 16  # past the cores a start-up has to itself, more threads only queue

_ahead_of_capture: ContextVar[bool] = ContextVar("compiling_ahead_of_capture", default=False)


def _compile_threads() -> int:
    return max(1, min(MAX_COMPILE_THREADS, len(os.sched_getaffinity(0))))


def capturing_graph() -> bool:
    """Whether the kernels launched now are a CUDA graph's: while one is captured, and while a pass
    compiles ahead of its capture (which must choose the kernels the capture will)."""
    return torch.cuda.is_current_stream_capturing() or _ahead_of_capture.get()


@contextlib.contextmanager
def compiling_ahead(what: str, for_capture: bool = False) -> Iterator[None]:
    """Within: every Triton launch of this thread compiles its kernel variant on a thread pool and does
    not run, so the tensors it would write keep what they held (run only passes whose results are
    thrown away). On leaving: waits for the compiles, and logs how many there were. what: the pass, for
    the log; for_capture: the pass is a CUDA graph's, to be captured next (see capturing_graph)."""
    # Triton's own asynchronous compile mode, not yet public (read against Triton 3.6 and 3.9)
    from triton.runtime._async_compile import AsyncCompileMode, active_mode
    from triton.runtime.jit import KernelInterface

    start = time.perf_counter()
    threads = _compile_threads()
    launch = KernelInterface.__getitem__

    def compile_only(kernel: KernelInterface, grid: object) -> Callable:
        # a launch goes through the class, so every thread's does: another thread's runs as it would
        if active_mode.get() is not mode:
            return launch(kernel, grid)
        return lambda *args, **kwargs: kernel.run(*args, grid=grid, warmup=True, **kwargs)

    with ThreadPoolExecutor(threads, thread_name_prefix="triton-compile") as pool:
        # a variant that fails to compile is left to the real pass, whose launch raises its error
        mode = AsyncCompileMode(pool, ignore_errors=True)
        KernelInterface.__getitem__ = compile_only
        capture = _ahead_of_capture.set(for_capture)
        try:
            with mode:
                yield
                compiled = len(mode.raw_futures)
        finally:
            _ahead_of_capture.reset(capture)
            KernelInterface.__getitem__ = launch
    log.info(
        "compiled %d Triton kernel variants (or read them from Triton's cache) for %s in %.1fs on %d threads",
        compiled,
        what,
        time.perf_counter() - start,
        threads,
    )
