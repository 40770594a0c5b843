"""Where offline-throughput time goes: wall time per step kind, and GPU kernels of one big prefill step."""

import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM

model = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
num = int(sys.argv[2]) if len(sys.argv) > 2 else 512
llm = LLM(
    model, load_format="dummy", max_num_seqs=256, max_num_batched_tokens=8192, enable_prefix_caching=False
)
eng = llm.engine
gen = torch.Generator().manual_seed(0)
params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
for i in range(num):
    eng.add_request(str(i), torch.randint(100, 30000, (512,), generator=gen).tolist(), params)
wall: dict[str, float] = defaultdict(float)
count: dict[str, int] = defaultdict(int)
sched = eng.scheduler
orig = sched.schedule


def schedule_and_note():
    out = orig()
    schedule_and_note.kind = "decode-only" if out.num_decodes == len(out.seqs) else "mixed/prefill"
    return out


sched.schedule = schedule_and_note
start = time.perf_counter()
while eng.has_unfinished():
    t = time.perf_counter()
    eng.step()
    kind = getattr(schedule_and_note, "kind", "?")
    wall[kind] += time.perf_counter() - t
    count[kind] += 1
total = time.perf_counter() - start
print(f"{model}: {num} x (512 -> 256) in {total:.2f}s = {num * 256 / total:.0f} output tok/s")
for k in wall:
    print(f"  {k:16} {count[k]:6d} steps {wall[k]:7.2f}s  {1e3 * wall[k] / count[k]:7.2f} ms/step")

# One prefill-only step of 16 x 512 tokens, kernels
for i in range(16):
    eng.add_request(
        f"x{i}", torch.randint(100, 30000, (512,), generator=gen).tolist(), SamplingParams(max_tokens=1)
    )
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    t = time.perf_counter()
    eng.step()
    eng.step()
    torch.cuda.synchronize()
    print(f"one 8192-token prefill step: {1e3 * (time.perf_counter() - t):.1f} ms wall")
totals: dict[str, float] = defaultdict(float)
for e in prof.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        key = (
            "gemm"
            if any(s in e.name.lower() for s in ("gemm", "cublas", "cutlass", "sm90", "xmma"))
            else e.name[:50]
        )
        totals[key] += e.device_time_total
for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:10]:
    print(f"  {v / 1e3:8.2f} ms  {k}")
