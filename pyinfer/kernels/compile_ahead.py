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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

MAX_COMPILE_THREADS = 16  # past the cores a start-up has to itself, more threads only queue


def _compile_threads() -> int:
    return max(1, min(MAX_COMPILE_THREADS, len(os.sched_getaffinity(0))))


@contextlib.contextmanager
def compiling_ahead(what: str) -> Iterator[None]:
    """Within: every Triton launch compiles its kernel variant on a thread pool and does not run, so
    the tensors it would write keep what they held (run only passes whose results are thrown away).
    On leaving: waits for the compiles, and logs how many there were. what: the pass, for the log."""
    # the asynchronous compile mode is Triton's own, if not yet public
    from triton.runtime._async_compile import AsyncCompileMode
    from triton.runtime.jit import KernelInterface

    start = time.perf_counter()
    threads = _compile_threads()
    launch = KernelInterface.__getitem__

    def compile_only(kernel: KernelInterface, grid: object):
        return lambda *args, **kwargs: kernel.run(*args, grid=grid, warmup=True, **kwargs)

    with ThreadPoolExecutor(threads, thread_name_prefix="triton-compile") as pool:
        mode = AsyncCompileMode(pool)
        KernelInterface.__getitem__ = compile_only
        try:
            with mode:
                yield
                compiled = len(mode.raw_futures)
        finally:
            KernelInterface.__getitem__ = launch
    log.info(
        "compiled %d Triton kernel variants (or read them from Triton's cache) for %s in %.1fs on %d threads",
        compiled,
        what,
        time.perf_counter() - start,
        threads,
    )
