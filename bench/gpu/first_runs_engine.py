"""Whether a fresh engine's first load costs more than the next identical one, without the HTTP front end
(diagnostic): after the server's warm-up, 128 x (512 -> 256) with at most 32 in flight (a new request as
one finishes, as a load client does), RUNS times (default 3); each run's wall time, its first 100 steps'
and its TTFT percentiles (from a request's add to its first token).
python3 bench/gpu/first_runs_engine.py MODEL_DIR [RUNS]"""

import sys
import time

import numpy as np
import torch

from pyinfer import SamplingParams
from pyinfer.bench.common import random_prompts
from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine
from pyinfer.heap import freeze_heap

engine = LLMEngine(EngineConfig(model=sys.argv[1], load_format="dummy"))
engine.warm_up()
freeze_heap()
params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
for run in range(1, 1 + (int(sys.argv[2]) if len(sys.argv) > 2 else 3)):
    pending = list(enumerate(random_prompts(128, [512], engine.model_config.vocab_size, seed=run)))
    added: dict[str, float] = {}
    ttft: list[float] = []
    steps: list[float] = []

    def add(pending: list, added: dict[str, float], run: int) -> None:
        i, prompt = pending.pop(0)
        engine.add_request(f"run{run}-{i}", prompt, params)
        added[f"run{run}-{i}"] = time.perf_counter()

    for _ in range(32):
        add(pending, added, run)
    seen: set[str] = set()
    start = time.perf_counter()
    while engine.has_unfinished():
        step_start = time.perf_counter()
        outputs = engine.step()
        now = time.perf_counter()
        steps.append((now - step_start) * 1e3)
        for out in outputs:
            if out.new_token_ids and out.request_id not in seen:
                seen.add(out.request_id)
                ttft.append((now - added[out.request_id]) * 1e3)
            if out.finish_reason is not None and pending:
                add(pending, added, run)
    torch.cuda.synchronize()
    total = (time.perf_counter() - start) * 1e3
    p50, p90, p99 = np.percentile(ttft, [50, 90, 99])
    print(
        f"run {run}: {total:.1f} ms, {len(steps)} steps, first 100 steps {sum(steps[:100]):.1f} ms; "
        f"TTFT p50 {p50:.1f} p90 {p90:.1f} p99 {p99:.1f} ms"
    )
engine.close()
