"""Whether a fresh engine's first load costs more than the next identical one, without the HTTP front end
(diagnostic): after the server's warm-up, 128 x (512 -> 256) with at most 32 in flight (a new request as
one finishes, as a load client does: pyinfer.bench.common.closed_loop), RUNS times (default 3); each run's wall time, its first 100 steps',
its TTFT percentiles (from a request's add to its first token), the CUDA caching allocator's new segments
(cudaMalloc calls) and retries in it, the garbage collections by generation; then the steps of run 1
slower than the same steps of run 2. With FIRST:LAST (FIRST > 0), steps FIRST to LAST - 1 of runs 1 and 2 under torch's
profiler: their 15 costliest operations on the host (self time).
python3 bench/gpu/first_runs_engine.py MODEL_DIR [RUNS [FIRST:LAST]]"""

import gc
import sys
import time

import numpy as np
import torch

from pyinfer import SamplingParams
from pyinfer.bench.common import closed_loop, random_prompts
from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine
from pyinfer.heap import freeze_heap

profiled = range(*map(int, sys.argv[3].split(":"))) if len(sys.argv) > 3 else range(0)

engine = LLMEngine(EngineConfig(model=sys.argv[1], load_format="dummy"))
engine.warm_up()
freeze_heap()
params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
step_times: list[list[float]] = []
collections: dict[int, list[float]] = {}  # generation -> ms of each collection in the current run
gc_start = [0.0]


def on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        gc_start[0] = time.perf_counter()
    else:
        collections.setdefault(info["generation"], []).append((time.perf_counter() - gc_start[0]) * 1e3)


gc.callbacks.append(on_gc)
for run in range(1, 1 + (int(sys.argv[2]) if len(sys.argv) > 2 else 3)):
    prompts = random_prompts(128, [512], engine.model_config.vocab_size, seed=run)
    added: dict[str, float] = {}
    ttft: list[float] = []
    steps: list[float] = []
    seen: set[str] = set()
    collections.clear()
    before = torch.cuda.memory_stats()
    start = time.perf_counter()
    profiler = None
    for outputs, step_ms in closed_loop(engine, prompts, params, 32, f"run{run}", added):
        now = time.perf_counter()
        if profiler is not None and len(steps) + 1 == profiled.stop:
            profiler.__exit__(None, None, None)
            print(f"run {run}, steps {profiled.start}-{profiled.stop - 1}:")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            profiler = None
        steps.append(step_ms)
        for out in outputs:
            if out.new_token_ids and out.request_id not in seen:
                seen.add(out.request_id)
                ttft.append((now - added[out.request_id]) * 1e3)
        if run <= 2 and len(steps) == profiled.start and profiled:  # the next step is the first profiled
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
    torch.cuda.synchronize()
    total = (time.perf_counter() - start) * 1e3
    if profiler is not None:  # the run ended before LAST
        profiler.__exit__(None, None, None)
    after = torch.cuda.memory_stats()
    p50, p90, p99 = np.percentile(ttft, [50, 90, 99])
    print(
        f"run {run}: {total:.1f} ms, {len(steps)} steps, first 100 steps {sum(steps[:100]):.1f} ms; "
        f"TTFT p50 {p50:.1f} p90 {p90:.1f} p99 {p99:.1f} ms; "
        f"segments {after['segment.all.allocated'] - before['segment.all.allocated']} (small pool "
        f"{after['segment.small_pool.allocated'] - before['segment.small_pool.allocated']}), "
        f"retries {after['num_alloc_retries'] - before['num_alloc_retries']}, "
        f"reserved {after['reserved_bytes.all.current'] / 2**30:.2f} GiB; collections "
        + ", ".join(f"gen{g} {len(t)} ({sum(t):.1f} ms)" for g, t in sorted(collections.items()))
    )
    step_times.append(steps)
if len(step_times) > 1:
    slower = sorted(
        range(min(len(step_times[0]), len(step_times[1]))), key=lambda i: step_times[1][i] - step_times[0][i]
    )[:8]
    print(
        "run 1's slowest steps against run 2 (index: ms, ms): "
        + ", ".join(f"{i}: {step_times[0][i]:.1f}, {step_times[1][i]:.1f}" for i in slower)
    )
engine.close()
