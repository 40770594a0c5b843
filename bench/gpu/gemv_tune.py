"""The batch-1 GEMV kernels against what they replace, on the decode matrices of the 1B and 8B shapes
(diagnostic): cuBLAS alone, and cuBLAS with the RMSNorm kernel before it and SiLU-and-mul after it where
the GEMV fuses them; then a sweep of the launch (rows x K-chunk x warps x programs per SM), and the
default one without PDL. python bench/gpu/gemv_tune.py"""

import itertools

import torch

import pyinfer.kernels.gemv as gemv_module
from pyinfer.kernels.elementwise import rms_norm, silu_and_mul
from pyinfer.kernels.gemv import gemv, norm_gemv

SHAPES = {  # name: (N, K, what the GEMV fuses: "norm" before, "gated" norm before and SiLU-and-mul after)
    "1b qkv": (3072, 2048, "norm"),
    "1b o": (2048, 2048, None),
    "1b gate_up": (16384, 2048, "gated"),
    "1b down": (2048, 8192, None),
    "1b head": (128256, 2048, "norm"),
    "8b qkv": (6144, 4096, "norm"),
    "8b o": (4096, 4096, None),
    "8b gate_up": (28672, 4096, "gated"),
    "8b down": (4096, 14336, None),
    "8b head": (128256, 4096, "norm"),
}


def bench(fn, weights, reps=100):
    """us per call of fn(weight), weights in rotation so that L2 (50 MB) does not hold the matrix."""
    it = itertools.cycle(weights)
    g = torch.cuda.CUDAGraph()
    fn(next(it))
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn(next(it))
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (3 * reps)


def variants(n, k, prologue):
    """(unfused reference, fused kernel) as functions of the weight."""
    dev, bf = "cuda", torch.bfloat16
    x, res = torch.randn(1, k, device=dev, dtype=bf), torch.randn(1, k, device=dev, dtype=bf)
    norm_w = torch.rand(k, device=dev, dtype=bf) + 0.5
    linear = torch.nn.functional.linear
    if prologue == "norm":
        return (
            lambda w: linear(rms_norm(x, norm_w, 1e-5, res)[0], w),
            lambda w: norm_gemv(x, res, norm_w, 1e-5, w)[0],
        )
    if prologue == "gated":
        return (
            lambda w: silu_and_mul(linear(rms_norm(x, norm_w, 1e-5, res)[0], w)),
            lambda w: norm_gemv(x, res, norm_w, 1e-5, w, gated=True)[0],
        )
    return lambda w: linear(x, w), lambda w: gemv(x, w)


print(
    f"{'shape':12}{'cublas':>8}{'unfused':>9}{'fused':>8}{'TB/s':>7}   sweep: fused us for rows x K-chunk x warps x programs/SM"
)
sweep = [  # rows x K-chunk x warps x programs per SM
    (4, 2048, 4, 4),
    (4, 2048, 4, 8),
    (4, 2048, 4, 16),
    (8, 2048, 4, 4),
    (8, 2048, 4, 8),
    (8, 2048, 8, 8),
    (16, 1024, 4, 8),
    (4, 4096, 4, 4),
    (4, 4096, 8, 8),
]
for name, (n, k, prologue) in SHAPES.items():
    ws = [
        torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        for _ in range(max(1, int(2e8 // (n * k * 2))))
    ]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(gemv(x, ws[0]), x @ ws[0].T, atol=2e-2, rtol=2e-2)
    cublas = bench(lambda w, x=x: torch.nn.functional.linear(x, w), ws)
    unfused, fused = variants(n, k, prologue)
    t_unfused, t_fused = bench(unfused, ws), bench(fused, ws)
    row = []
    config = gemv_module._config
    for tile in sweep:
        gemv_module._config = lambda n, k, tile=tile: tile
        row.append(f"{bench(fused, ws):.1f}")
    gemv_module._config = config
    pdl_args = gemv_module.pdl_args
    gemv_module.pdl_args = lambda x: {"USE_PDL": False, "launch_pdl": False}
    row.append(f"{bench(fused, ws):.1f}")
    gemv_module.pdl_args = pdl_args
    tbs = n * k * 2 / t_fused / 1e6
    print(
        f"{name:12}{cublas:>8.1f}{t_unfused:>9.1f}{t_fused:>8.1f}{tbs:>7.2f}   "
        + " ".join(f"{'x'.join(map(str, c))}:{t}" for c, t in zip([*sweep, ("no", "pdl")], row, strict=True))
    )
