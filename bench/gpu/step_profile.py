"""Where one batch-1 decode step's time goes: host phases timed with a sync after each (diagnostic only)."""

import sys
import time

import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.engine.sampling_tensors import build_sampling_tensors

_inference = torch.inference_mode()
_inference.__enter__()
model = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
llm = LLM(model, load_format="dummy", max_num_seqs=max(16, batch))
eng, runner = llm.engine, llm.engine.runner
for i in range(batch):
    eng.add_request(
        f"p{i}", list(range(100 + i, 612 + i)), SamplingParams(temperature=0, max_tokens=600, ignore_eos=True)
    )
while eng.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in eng.scheduler.running):
    eng.step()  # until every sequence decodes
for _ in range(5):
    eng.step()
phases = {k: 0.0 for k in ("schedule", "prepare", "graph", "sample+host", "postprocess", "whole step")}
n = 50
sync = torch.cuda.synchronize
for _ in range(n):
    t0 = time.perf_counter()
    sched = eng.scheduler.schedule()
    t1 = time.perf_counter()
    inputs = runner._prepare(sched)
    sync()
    t2 = time.perf_counter()
    m = inputs.meta
    logits, argmax = runner.graphs.run(inputs.uploaded, m)
    sync()
    t3 = time.perf_counter()
    st = build_sampling_tensors(inputs.sample_seqs, runner.vocab_size, runner.eos_token_ids, runner.device)
    ids = runner.sampler(logits, st, argmax).token_ids.tolist()
    t4 = time.perf_counter()
    for seq, n_new, token in zip(sched.seqs, sched.num_new_tokens, ids, strict=True):
        seq.num_computed_tokens += n_new
        seq.token_ids.append(token)
    t5 = time.perf_counter()
    for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=False):
        phases[k] += dt
start = time.perf_counter()
for _ in range(n):
    eng.step()
sync()
phases["engine.step (unsynced phases)"] = time.perf_counter() - start
print(f"{model} batch {batch}: mean per step over {n} steps")
for k, v in phases.items():
    print(f"  {k:32}{1e6 * v / n:10.1f} us")
