"""Host time of an eager prefill (diagnostic): wall time per 2,048-token prefill and where Python spends it."""

import cProfile
import pstats
import sys
import time

import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

model = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
llm = LLM(model, load_format="dummy", max_num_seqs=16, enable_prefix_caching=False)
eng = llm.engine


def prefill(i: int) -> float:
    """One synced prefill; returns the host time of the step that launches it."""
    eng.add_request(f"p{i}", list(range(100 + i, 2148 + i)), SamplingParams(max_tokens=1))
    start = time.perf_counter()
    eng.step()
    launched = time.perf_counter() - start
    while eng.has_unfinished():
        eng.step()
    torch.cuda.synchronize()
    return launched


for i in range(3):
    prefill(i)
start = time.perf_counter()
launch = sum(prefill(10 + i) for i in range(5))
wall = time.perf_counter() - start
print(
    f"{model}: {1e3 * wall / 5:.1f} ms per 2,048-token prefill (wall, synced), {1e3 * launch / 5:.1f} ms to launch it"
)
profiler = cProfile.Profile()
profiler.enable()
for i in range(5):
    prefill(20 + i)
profiler.disable()
stats = pstats.Stats(profiler).stats
for (file, line, name), (calls, _, tottime, _, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:15]:
    print(f"{1e3 * tottime / 5:8.2f} ms {calls // 5:6d}x  {file.rsplit('/', 1)[-1]}:{line}({name})")
