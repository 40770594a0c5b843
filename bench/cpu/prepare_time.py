"""Host time of building one step's inputs (ModelRunner._prepare): a 2,048-token prefill and a batch of
64 decodes, on the embedded model (diagnostic): python bench/cpu/prepare_time.py"""

import time

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM


def ms_per_prepare(llm: LLM, reps: int = 200) -> float:
    runner, batch = llm.engine.runner, llm.engine.scheduler.schedule()
    for _ in range(5):
        runner._prepare(batch)
    start = time.perf_counter()
    for _ in range(reps):
        runner._prepare(batch)
    return 1e3 * (time.perf_counter() - start) / reps


prefill = LLM(device="cpu", dtype="float32", max_model_len=4096, kv_cache_memory_gb=0.5)
prefill.engine.add_request("p", list(range(100, 2148)), SamplingParams(max_tokens=1))
print(f"2,048-token prefill: {ms_per_prepare(prefill):.3f} ms")
del prefill

decode = LLM(
    device="cpu", dtype="float32", max_num_seqs=64, max_num_batched_tokens=8192, kv_cache_memory_gb=1.0
)
for i in range(64):
    decode.engine.add_request(
        f"d{i}", list(range(100 + i, 400 + i)), SamplingParams(max_tokens=50, ignore_eos=True)
    )
scheduler = decode.engine.scheduler
while scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in scheduler.running):
    decode.engine.step()  # until every sequence decodes
print(f"64 decodes: {ms_per_prepare(decode):.3f} ms")
