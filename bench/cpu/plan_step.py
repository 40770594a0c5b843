"""Host cost of plan_step (a step's plain data, built each step on rank 0) for synthetic decode batches: sequences
of about the given context with random block tables. python bench/cpu/plan_step.py"""

import random
import time

from pyinfer.engine.scheduler import SchedulerOutput
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.step_plan import plan_step
from pyinfer.sampling_params import SamplingParams

CALLS = 200


def decode_batch(rng: random.Random, size: int, context: int) -> SchedulerOutput:
    batch = SchedulerOutput()
    for i in range(size):
        length = context + rng.randint(-100, 100)
        seq = Sequence(f"r{i}", 0, list(range(length)), SamplingParams(), 100_000)
        seq.block_table = rng.sample(range(100_000), -(-length // 16))
        seq.num_computed_tokens = length - 1
        batch.add(seq, 1)
    batch.num_decodes = size
    return batch


rng = random.Random(0)
for size, context in ((256, 640), (64, 640), (1, 640), (256, 2000)):
    batch = decode_batch(rng, size, context)
    plan_step(batch, 16)
    start = time.perf_counter()
    for _ in range(CALLS):
        plan_step(batch, 16)
    print(f"{size:4d} sequences, ~{context} tokens: {(time.perf_counter() - start) / CALLS * 1e6:.0f} us")
