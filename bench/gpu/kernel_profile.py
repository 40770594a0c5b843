"""GPU time per kernel kind in eager decode steps (diagnostic): where a step's device time goes."""

import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

model = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
prefill = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # >0: profile one prefill of this many tokens
llm = LLM(
    model,
    load_format="dummy",
    max_num_seqs=max(batch, 1),
    enforce_eager=True,
    max_num_batched_tokens=max(2048, prefill),
    enable_prefix_caching=False,
)
eng = llm.engine
if prefill:
    batch = 0
    for i in range(3):
        eng.add_request(f"w{i}", list(range(100 + i, 100 + i + prefill)), SamplingParams(max_tokens=1))
        while eng.has_unfinished():
            eng.step()
    steps = 3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            eng.add_request(f"p{i}", list(range(200 + i, 200 + i + prefill)), SamplingParams(max_tokens=1))
            while eng.has_unfinished():
                eng.step()
        torch.cuda.synchronize()
for i in range(batch):
    eng.add_request(
        f"r{i}", list(range(100 + i, 228 + i)), SamplingParams(temperature=0, max_tokens=300, ignore_eos=True)
    )
while eng.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in eng.scheduler.running):
    eng.step()  # until every sequence decodes
if not prefill:
    for _ in range(5):
        eng.step()
    steps = 20
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            eng.step()
        torch.cuda.synchronize()
totals: dict[str, float] = defaultdict(float)
counts: dict[str, int] = defaultdict(int)
for e in prof.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        name = e.name
        key = (
            "gemm/gemv"
            if any(s in name.lower() for s in ("gemm", "gemv", "cublas", "cutlass", "sm90", "xmma"))
            else name[:60]
        )
        totals[key] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        counts[key] += 1
total = sum(totals.values())
print(
    f"{model} batch {batch} prefill {prefill}: GPU time per step {total / steps:.0f} us (kernels back to back, no gaps)"
)
for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:14]:
    print(f"  {v / steps:8.1f} us  {counts[k] / steps:6.1f}/step  {k}")
