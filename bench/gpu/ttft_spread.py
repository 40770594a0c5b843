"""Spread of batch-1 time to first token (diagnostic): many single prefills, greedy and sampled,
with the host time of the launching step, garbage collections and the GPU time of one prefill."""

import gc
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.heap import freeze_heap

model = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
llm = LLM(model, load_format="dummy", max_num_seqs=16, enable_prefix_caching=False)
freeze_heap()  # as the server's engine process does
eng = llm.engine
gc_ms: list[float] = []
_gc_start = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        gc_ms.append(1e3 * (time.perf_counter() - _gc_start[0]))


gc.callbacks.append(_on_gc)


def once(i: int, n: int, params: SamplingParams) -> tuple[float, float]:
    """(TTFT ms, host ms of the step that launches the prefill) of one request."""
    eng.add_request(f"r{i}", list(range(100 + i, 100 + i + n)), params)
    start = time.perf_counter()
    eng.step()
    launched = time.perf_counter() - start
    first = None
    while eng.has_unfinished():
        if eng.step() and first is None:
            first = time.perf_counter() - start
    return 1e3 * first, 1e3 * launched


greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
sampled = SamplingParams(temperature=1.0, max_tokens=8, ignore_eos=True)
i = 0
for n in (128, 2048):
    for name, params in (("greedy", greedy), ("t=1", sampled)):
        for _ in range(3):
            once(i, n, params)
            i += 1
        gc_ms.clear()
        runs = []
        for _ in range(15):
            runs.append(once(i, n, params))
            i += 1
        ttft = sorted(r[0] for r in runs)
        launch = sorted(r[1] for r in runs)
        print(
            f"{model} {n:5d} tokens {name:6s}: TTFT min {ttft[0]:5.1f} med {statistics.median(ttft):5.1f} "
            f"max {ttft[-1]:5.1f} ms | launch step min {launch[0]:5.1f} med {statistics.median(launch):5.1f} "
            f"max {launch[-1]:5.1f} ms | {len(gc_ms)} GCs, {sum(gc_ms):.1f} ms"
        )
for n in (128, 2048):
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            once(i, n, greedy)
            i += 1
        torch.cuda.synchronize()
    gpu = sum(e.device_time_total for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"{model} {n:5d} tokens: GPU kernel time per request (prefill + 7 decodes) {gpu / 3e3:.2f} ms")
