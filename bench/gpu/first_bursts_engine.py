"""Whether a fresh engine's first burst pays a one-time cost, without the HTTP front end (diagnostic):
bursts of 32 x (512 -> 1) through LLMEngine after the server's warm-up, each step's wall time.
python3 bench/gpu/first_bursts_engine.py MODEL_DIR [LOAD_FORMAT] [PROMPT_LEN]"""

import sys
import time

import torch

from pyinfer import SamplingParams
from pyinfer.bench.common import random_prompts
from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine
from pyinfer.heap import freeze_heap

model, load_format = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "dummy"
length = int(sys.argv[3]) if len(sys.argv) > 3 else 512
engine = LLMEngine(EngineConfig(model=model, load_format=load_format))
engine.warm_up()
freeze_heap()
params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
for burst in range(1, 5):
    prompts = random_prompts(32, [length], engine.model_config.vocab_size, seed=burst)
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"burst-{burst}-{i}", prompt, params)
    steps = []
    while engine.has_unfinished():
        step_start = time.perf_counter()
        engine.step()
        steps.append((time.perf_counter() - step_start) * 1e3)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    total = (time.perf_counter() - start) * 1e3
    print(f"burst {burst}: {total:.1f} ms; steps (ms): " + " ".join(f"{s:.1f}" for s in steps))
