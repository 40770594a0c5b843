"""The C++ decode attention over a KV cache of each dtype: one decode step's 30 layers (SmolLM2's 9 query
and 3 KV heads of 64) at a batch and context, each layer's pages apart so that the step reads from
memory as the engine's does. Prints ms a step.

Usage: python bench/cpu/decode_attention.py [BATCH] [CONTEXT]
"""

import sys
import time

import torch

from pyinfer.kernels.cpu import cpu_ops

ops = cpu_ops()
assert ops is not None, "the C++ CPU kernels are not built"
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 16
context = int(sys.argv[2]) if len(sys.argv) > 2 else 256
LAYERS, HEADS, KV_HEADS, DIM, PAGE = 30, 9, 3, 64, 16
pages = batch * -(-context // PAGE)
cache = torch.randn(2, KV_HEADS, pages * LAYERS, PAGE, DIM)
tables = torch.arange(pages).view(batch, -1)
lens = torch.full((batch,), context)
q = torch.randn(batch, HEADS, DIM)


def step(layers: torch.Tensor) -> None:
    for layer in range(LAYERS):
        ops.decode_attention(q, layers, tables + layer * pages, lens, DIM**-0.5)


print(f"decode attention, {LAYERS} layers, batch {batch}, context {context}")
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    layers = cache.to(dtype)
    step(layers)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        step(layers)
        best = min(best, time.perf_counter() - start)
    read = layers.numel() * layers.element_size() / 1e9
    print(
        f"{str(dtype).removeprefix('torch.'):>9} cache: {best * 1e3:6.2f} ms a step ({read / best:.1f} GB/s)"
    )
