"""Triton GEMV against cuBLAS on the decode matrices of the 1B and 8B shapes (diagnostic)."""

import itertools

import torch

from pyinfer.kernels.gemv import gemv

SHAPES = {  # name: (N, K)
    "1b qkv": (3072, 2048),
    "1b o": (2048, 2048),
    "1b gate_up": (16384, 2048),
    "1b down": (2048, 8192),
    "1b head": (128256, 2048),
    "8b qkv": (6144, 4096),
    "8b o": (4096, 4096),
    "8b gate_up": (28672, 4096),
    "8b down": (4096, 14336),
    "8b head": (128256, 4096),
}


def bench(fn, x, weights, reps=200):
    it = itertools.cycle(weights)
    g = torch.cuda.CUDAGraph()
    fn(x, next(it))
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn(x, next(it))
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (3 * reps)  # us per call


print(f"{'shape':12}{'cublas us':>11}{'TB/s':>7}{'gemv us':>9}{'TB/s':>7}  used")
for name, (n, k) in SHAPES.items():
    # several weights in rotation so that L2 (50 MB) does not hold the matrix between calls
    ws = [
        torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        for _ in range(max(1, int(2e8 // (n * k * 2))))
    ]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(gemv(x, ws[0]), x @ ws[0].T, atol=2e-2, rtol=2e-2)
    cub = bench(torch.nn.functional.linear, x, ws)
    ours = bench(gemv, x, ws)
    nbytes = n * k * 2
    used = "gemv" if k <= 2 * n else "cublas"  # use_gemv's rule (inside a captured graph)
    print(f"{name:12}{cub:>11.1f}{nbytes / cub / 1e6:>7.2f}{ours:>9.1f}{nbytes / ours / 1e6:>7.2f}  {used}")
