"""One prefill step of the embedded model on the CPU (one chunk of TOKENS prompt tokens) for each query
block of the torch path's prefill attention (CAUSAL_BLOCK, pyinfer/attention/torch_backend.py), where its
value comes from. Prints seconds per step; BLOCK 0 attends with the whole square at once. Where the C++
kernels are built, prompt rows go through the paged kernel instead and BLOCK changes nothing: run with
PYINFER_DISABLE_CPU_KERNELS=1 to measure the blocks.

Usage: python bench/cpu/prefill_step.py [TOKENS] [BLOCK ...]
"""

import sys
import time

from pyinfer import SamplingParams
from pyinfer.attention import torch_backend
from pyinfer.engine.llm import LLM

tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
blocks = [int(b) for b in sys.argv[2:]] or [torch_backend.CAUSAL_BLOCK]
engine = LLM(device="cpu", max_num_batched_tokens=tokens, kv_cache_memory_gb=0.5).engine
engine.block_manager.enable_prefix_caching = False
params = SamplingParams(temperature=0, max_tokens=1)
for i, block in enumerate(blocks):
    torch_backend.CAUSAL_BLOCK = block or tokens
    engine.add_request(f"p{i}", [(7 * j + i) % 4000 + 100 for j in range(tokens)], params)
    start = time.perf_counter()
    engine.step()
    print(
        f"{tokens} tokens, query block {block or tokens}: {time.perf_counter() - start:.2f} s a prefill step"
    )
    while engine.has_unfinished():
        engine.step()
