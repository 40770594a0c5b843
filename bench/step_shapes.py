"""Which matrix-product shapes a load's eager steps meet for the first time (diagnostic, any device): the
GPU load of bench/gpu/first_runs_engine.py (128 x (512 -> 256), at most 32 in flight) with the GPU's
batch limits, through LLMEngine on this machine. Per step: the tokens (the rows of every linear layer's
product) and the sampled rows (the LM head's), and whether a GPU would replay a CUDA graph instead. Prints
the eager steps whose token count or sampled-row count had not been seen before them (nor by graph
capture's eager runs, the profile run or the warm-up), by run, and the rows a GPU's padding of eager steps
adds (engine/model_runner.py). PROMPTS and CONCURRENCY (default 128 and 32) change the load.
python bench/step_shapes.py [MODEL] [RUNS] [PROMPTS CONCURRENCY]"""

import sys

from pyinfer import SamplingParams
from pyinfer.bench.common import closed_loop, random_prompts
from pyinfer.config import EngineConfig
from pyinfer.engine.cuda_graphs import (
    MAX_PREFILL_GRAPH_TOKENS,
    batch_size_ladder,
    pad_to,
    prefill_size_ladder,
    size_ladder,
)
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.model_runner import EAGER_TOKENS
from pyinfer.model_files import default_model_path

MAX_SEQS, BUDGET = 256, 8192  # the GPU's defaults
engine = LLMEngine(
    EngineConfig(
        model=sys.argv[1] if len(sys.argv) > 1 else str(default_model_path()),
        max_num_seqs=MAX_SEQS,
        max_num_batched_tokens=BUDGET,
    )
)
steps: list[tuple[int, int, bool]] = []  # (tokens, sampled rows, replayed from a graph on a GPU)
inputs_of = engine.runner._inputs


def recorded_inputs(plan):
    inputs = inputs_of(plan)
    meta, tokens, rows = inputs.meta, inputs.input_ids.numel(), inputs.token_rows.numel()
    graph = rows == meta.num_seqs and (
        meta.num_decodes == meta.num_seqs
        or (meta.num_seqs == 1 and meta.num_decodes == 0 and tokens <= MAX_PREFILL_GRAPH_TOKENS)
    )
    steps.append((tokens, rows, graph))
    return inputs


engine.runner._inputs = recorded_inputs
graph_sizes = batch_size_ladder(MAX_SEQS)
token_sizes = size_ladder(BUDGET, EAGER_TOKENS)  # what a GPU pads eager steps to
seen_tokens = {BUDGET, *graph_sizes, *prefill_size_ladder(min(BUDGET, MAX_PREFILL_GRAPH_TOKENS))}
seen_rows = {MAX_SEQS, 1, *graph_sizes}
engine.warm_up()
for tokens, rows, graph in steps:
    if not graph:
        seen_tokens.add(tokens)
        seen_rows.add(rows)
num_prompts, concurrency = (int(a) for a in sys.argv[3:5]) if len(sys.argv) > 4 else (128, 32)
params = SamplingParams(temperature=0, max_tokens=256, ignore_eos=True)
for run in range(1, 1 + (int(sys.argv[2]) if len(sys.argv) > 2 else 2)):
    steps.clear()
    prompts = random_prompts(num_prompts, [512], engine.model_config.vocab_size, seed=run)
    for _ in closed_loop(engine, prompts, params, concurrency, f"run{run}", {}):
        pass
    new = []
    for index, (tokens, rows, graph) in enumerate(steps):
        if graph:
            continue
        fresh = []
        if tokens not in seen_tokens:
            fresh.append(f"{tokens} tokens")
        if rows and rows not in seen_rows:
            fresh.append(f"{rows} sampled rows")
        seen_tokens.add(tokens)
        seen_rows.add(rows)
        if fresh:
            new.append(f"step {index}: " + ", ".join(fresh))
    eager = [tokens for tokens, _, graph in steps if not graph]
    added, everything = (
        sum(pad_to(token_sizes, tokens) - tokens for tokens in eager),
        sum(t for t, _, _ in steps),
    )
    print(
        f"run {run}: {len(steps)} steps, {len(eager)} eager; first seen in eager steps: {len(new)}; padding adds "
        f"{added} rows to the eager steps' {sum(eager)} ({100 * added / max(sum(eager), 1):.2f}%), "
        f"to all steps' {everything} ({100 * added / everything:.2f}%)"
    )
    for line in new:
        print("  " + line)
engine.close()
