"""Host time of one launch from Python (diagnostic): cuBLAS through F.linear against a Triton kernel.
The GPU is kept busy, so that the launches never wait; prints microseconds per call."""

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pyinfer.kernels.elementwise import silu_and_mul


def host_us(fn: Callable[[], object], reps: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / reps * 1e6


weight = torch.randn(3072, 2048, device="cuda", dtype=torch.bfloat16)
for rows in (1, 2048):
    x = torch.randn(rows, 2048, device="cuda", dtype=torch.bfloat16)
    print(f"F.linear, {rows} rows: {host_us(lambda: F.linear(x, weight)):.1f} us/call")  # noqa: B023
gate_up = torch.randn(2048, 16384, device="cuda", dtype=torch.bfloat16)
print(f"Triton silu_and_mul: {host_us(lambda: silu_and_mul(gate_up)):.1f} us/call")
