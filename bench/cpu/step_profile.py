"""Where a CPU decode step's time goes (SmolLM2 by default): mean step time, then the calls that take it
(cProfile, so that the C++ kernels show beside torch's ops), in ms per step.

Usage: python bench/cpu/step_profile.py [BATCH] [CONTEXT] [MODEL]
"""

import cProfile
import pstats
import sys
import time

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
context = int(sys.argv[2]) if len(sys.argv) > 2 else 192
model = sys.argv[3] if len(sys.argv) > 3 else None
llm = LLM(model, device="cpu", max_num_seqs=max(16, batch), kv_cache_memory_gb=0.5)
eng = llm.engine
for i in range(batch):
    prompt = [(7 * i + j) % 4000 + 100 for j in range(context)]
    eng.add_request(f"p{i}", prompt, SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
while eng.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in eng.scheduler.running):
    eng.step()  # until every sequence decodes
for _ in range(5):
    eng.step()
n = 30
start = time.perf_counter()
for _ in range(n):
    eng.step()
step_ms = 1e3 * (time.perf_counter() - start) / n
profiler = cProfile.Profile()
profiler.enable()
for _ in range(n):
    eng.step()
profiler.disable()
stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
top = sorted(stats.items(), key=lambda item: -item[1][2])[:14]
print(f"{'ms/step':>9}  {'calls/step':>10}  call")
for (file, line, name), (calls, _, tottime, _, _) in top:
    where = name if file == "~" else f"{file.rsplit('/', 1)[-1]}:{line}({name})"
    print(f"{1e3 * tottime / n:9.2f}  {calls / n:10.0f}  {where}")
print(
    f"batch {batch}, context ~{context}: {step_ms:.2f} ms per decode step ({1e3 * batch / step_ms:.1f} tok/s)"
)
