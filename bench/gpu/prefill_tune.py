"""Time the paged prefill attention kernel over launch configs: python bench/gpu/prefill_tune.py [1b|8b]
(Llama-3.2-1B's heads: GQA 32:8, head 64; Llama-3.1-8B's: GQA 32:8, head 128)."""

import functools
import sys

import torch
import triton

from pyinfer.kernels.prefill_attention import prefill_attention

torch.manual_seed(0)
heads, kv_heads, page = 32, 8, 16
dim = 64 if sys.argv[1:] == ["1b"] else 128
for qlens in ([2048], [512] * 16):
    tokens = sum(qlens)
    nblocks = sum(-(-n // page) for n in qlens)
    cache = torch.randn(2, nblocks, page, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    perm = torch.randperm(nblocks, device="cuda")
    width = max(-(-n // page) for n in qlens)
    tables = torch.zeros(len(qlens), width, dtype=torch.long, device="cuda")
    i = 0
    for r, n in enumerate(qlens):
        b = -(-n // page)
        tables[r, :b] = perm[i : i + b]
        i += b
    q = torch.randn(tokens, heads, dim, device="cuda", dtype=torch.bfloat16)
    starts = torch.tensor([0, *torch.tensor(qlens).cumsum(0).tolist()], device="cuda")
    lens = torch.tensor(qlens, device="cuda")
    flops = sum(4 * heads * dim * n * (n + 1) / 2 for n in qlens)
    ref = prefill_attention(q, cache, tables, starts, lens, max(qlens), dim**-0.5, config=(64, 64, 4, 3))
    print(f"query lengths {qlens[0]} x {len(qlens)}: {flops / 1e9:.0f} GFLOP per layer")
    for cfg in [
        (64, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 64, 8, 2),
        (128, 32, 4, 3),
        (128, 128, 8, 2),
        (64, 64, 4, 2),
        (128, 64, 4, 2),
        (128, 128, 8, 3),
        (64, 128, 4, 2),
    ]:
        try:
            out = prefill_attention(q, cache, tables, starts, lens, max(qlens), dim**-0.5, config=cfg)
            err = (out.float() - ref.float()).abs().max().item()
            run = functools.partial(
                prefill_attention, q, cache, tables, starts, lens, max(qlens), dim**-0.5, config=cfg
            )
            ms = triton.testing.do_bench(run, return_mode="median")
            print(f"  {cfg}: {1e3 * ms:8.1f} us  {flops / ms / 1e9:6.0f} TFLOP/s  max diff {err:.3g}")
        except Exception as e:  # a config that does not fit in shared memory
            print(f"  {cfg}: failed {type(e).__name__}")
