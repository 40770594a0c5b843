"""Whether a CUDA graph's first launch costs more than its next ones (diagnostic; CUDA uploads a graph at
its first launch unless it was uploaded before): a fresh engine's graphs, before any warm-up, each
replayed three times on the inputs capture left (padding: no KV cache slot written), in ms.
python3 bench/gpu/graph_first_replay.py MODEL_DIR"""

import sys
import time

import torch

from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine

engine = LLMEngine(EngineConfig(model=sys.argv[1], load_format="dummy"))
graphs = engine.runner.graphs
totals = [0.0, 0.0, 0.0]
for name, ladder in (("decode", graphs.decode), ("prefill", graphs.prefill)):
    for size in ladder.sizes:
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            ladder.graphs[size].replay()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        totals = [t + u for t, u in zip(totals, times, strict=True)]
        print(f"{name} {size:5d}: first {times[0]:.2f} ms, then {times[1]:.2f} and {times[2]:.2f}")
print(f"all graphs: first launches {totals[0]:.1f} ms, then {totals[1]:.1f} and {totals[2]:.1f}")
engine.close()
