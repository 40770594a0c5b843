"""Batch-1 decode on the GPU: what one CUDA-graph replay costs alone, what a whole engine step costs,
and the graph's kernels in order with their gaps (diagnostic): python bench/gpu/graph_timeline.py [model] [--no-pdl]."""

import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import pyinfer.kernels.pdl
from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

model = next((a for a in sys.argv[1:] if not a.startswith("-")), "llama-3.2-1b")
if "--no-pdl" in sys.argv:  # A/B of programmatic dependent launch
    pyinfer.kernels.pdl._hopper_or_newer = lambda device: False
llm = LLM(model, load_format="dummy", max_num_seqs=16)
eng = llm.engine
graphs = eng.runner.graphs
eng.add_request("r", list(range(100, 228)), SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
for _ in range(20):
    eng.step()
torch.cuda.synchronize()

# 1. the graph alone, replayed back to back
g = graphs.decode.graphs[1]
for _ in range(10):
    g.replay()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(200):
    g.replay()
end.record()
torch.cuda.synchronize()
replay_us = start.elapsed_time(end) * 1e3 / 200

# 2. whole engine steps, and the host's share: scheduling + launching the next step, and waiting
host_us = {"schedule": 0.0, "launch": 0.0, "wait for the device": 0.0, "process outputs": 0.0}


def timed(key, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        host_us[key] += (time.perf_counter() - start) * 1e6 / 100
        return result

    return wrapper


torch.cuda.synchronize()
t0 = time.perf_counter()
eng.scheduler.schedule = timed("schedule", eng.scheduler.schedule)
eng.runner.launch = timed("launch", eng.runner.launch)
eng.runner.collect = timed("wait for the device", eng.runner.collect)
process = eng._process
eng._process = timed("process outputs", process)
for _ in range(100):
    eng.step()
torch.cuda.synchronize()
step_us = (time.perf_counter() - t0) * 1e6 / 100
host_us["process outputs"] -= host_us["wait for the device"]
for name in ("launch", "collect"):
    delattr(eng.runner, name)
del eng.scheduler.schedule, eng._process

# 3. kernels of a few engine steps, in order
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        eng.step()
    torch.cuda.synchronize()
kernels = sorted(
    (e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
    key=lambda e: e.time_range.start,
)
busy = sum(e.time_range.end - e.time_range.start for e in kernels)
span = kernels[-1].time_range.end - kernels[0].time_range.start
by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
prev_end = None
for e in kernels:
    d = e.time_range.end - e.time_range.start
    gap = 0.0 if prev_end is None else max(0.0, e.time_range.start - prev_end)
    key = e.name[:70]
    by_name[key][0] += d / 5
    by_name[key][1] += 1 / 5
    by_name[key][2] += gap / 5
    prev_end = e.time_range.end
print(
    f"{model} batch 1: graph replay alone {replay_us:.0f} us; engine step {step_us:.0f} us "
    f"({1e6 / step_us:.1f} tok/s); profiled: {len(kernels) / 5:.0f} kernels/step, "
    f"busy {busy / 5:.0f} us of {span / 5:.0f} us per step"
)
print("host per step (us): " + ", ".join(f"{k} {v:.0f}" for k, v in host_us.items()))
print(f"{'us/step':>9} {'n/step':>7} {'gap before':>10}  kernel")
for k, (d, n, gap) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
    print(f"{d:9.1f} {n:7.1f} {gap:10.1f}  {k}")
