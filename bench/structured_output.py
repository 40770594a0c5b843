"""What constrained decoding costs a step: mean decode step time with B rows under a JSON schema against
the same B rows unconstrained (B = 1, 16, 64), and the grammar compile time of the tests' schemas.

Usage: python bench/structured_output.py [MODEL] [--device cuda --load-format dummy --tokenizer DIR]
       [--grammar-workers 0,4]
   (CPU default: the embedded SmolLM2; on a GPU e.g. `llama-3.2-1b --device cuda --load-format dummy`
   with a real tokenizer's folder, since a dummy model has none: SmolLM2's, saved by
   `AutoTokenizer.save_pretrained`, serves; ids past its vocabulary stay masked)
"""

import argparse
import json
import time

from pyinfer import SamplingParams
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.llm import LLM
from pyinfer.sampling_params import StructuredOutput
from tests.server.structured_schemas import SCHEMAS

# one long string field: the rows stay inside the grammar for every timed step
LONG_TEXT = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 2000, "maxLength": 4000}},
    "required": ["text"],
}
STEPS = 24

parser = argparse.ArgumentParser()
parser.add_argument("model", nargs="?")
parser.add_argument("--device", default="cpu")
parser.add_argument("--load-format", default="auto")
parser.add_argument("--tokenizer")
parser.add_argument(
    "--grammar-workers",
    default="",
    help="comma-separated grammar worker process counts to compare (0: the engine's process; default: "
    "the engine's)",
)
args = parser.parse_args()
llm = LLM(
    args.model, device=args.device, load_format=args.load_format, tokenizer=args.tokenizer, max_num_seqs=64
)
engine: LLMEngine = llm.engine


def use_grammar_workers(workers: int) -> None:
    """The engine's grammars kept in this many worker processes from here on."""
    engine.grammars.close()
    engine.grammars = engine.new_grammars(workers)


mask_wait_ms: dict[tuple[int, bool], float] = {}  # the last run's, per step


def step_ms(rows: int, constrained: bool) -> float:
    structured = StructuredOutput(kind="json", spec=json.dumps(LONG_TEXT)) if constrained else None
    params = SamplingParams(temperature=1.0, max_tokens=STEPS + 8, ignore_eos=True, structured=structured)
    for i in range(rows):
        engine.add_request(f"{constrained}-{rows}-{i}", [1, 2, 3, 4, 5, 6, 7, 8, 9 + i], params)
    while engine.scheduler.waiting or engine._compiling:  # compiled, prefilled: decoding from here
        engine.step()
    for _ in range(3):
        engine.step()
    grammars, spent = engine.grammars, [0.0]

    def timed(call):  # the engine thread's time in the masks' calls: the fill itself in-process
        def run(*args):
            begin = time.perf_counter()
            try:
                return call(*args)
            finally:
                spent[0] += time.perf_counter() - begin

        return run

    grammars.dispatch, grammars.collect = timed(grammars.dispatch), timed(grammars.collect)
    start = time.perf_counter()
    for _ in range(STEPS):
        engine.step()
    elapsed = (time.perf_counter() - start) / STEPS * 1e3
    del grammars.dispatch, grammars.collect
    mask_wait_ms[(rows, constrained)] = spent[0] / STEPS * 1e3
    for i in range(rows):
        engine.abort(f"{constrained}-{rows}-{i}")
    while engine.has_unfinished():
        engine.step()
    return elapsed


print(f"device {engine.device}, model {engine.model_path}")
counts = [int(n) for n in args.grammar_workers.split(",") if n]
for rows in (1, 16, 64):  # each twice, the faster kept: a first run warms buffers up
    plain = min(step_ms(rows, False) for _ in range(2))
    for workers in counts or [engine.grammars.workers]:
        if counts:
            use_grammar_workers(workers)
        shaped = min(step_ms(rows, True) for _ in range(2))
        buffers = engine.grammars._masks.buffers
        pinned = "" if not engine.runner.is_cuda else f", masks in pinned memory: {buffers.is_pinned()}"
        print(
            f"{rows:3d} rows: unconstrained {plain:7.2f} ms/step, constrained {shaped:7.2f} ms/step "
            f"({shaped / plain:.2f}x), {workers} grammar worker processes{pinned}, masks "
            f"{mask_wait_ms[(rows, True)]:.2f} ms/step on the engine's thread"
        )

grammars = engine.grammars
for name, schema in SCHEMAS.items():
    start = time.perf_counter()
    compilation = grammars.submit(StructuredOutput(kind="json", spec=json.dumps(schema)), 1)
    while not compilation.future.done():
        grammars.poll(timeout=0.01)
    compilation.future.result()
    print(f"compile {name:18s} {(time.perf_counter() - start) * 1e3:7.1f} ms")
    grammars.discard(compilation)
