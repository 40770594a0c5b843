"""Constrained decoding on a GPU, checked: grammar worker processes and in-process, eager and graphs,
overlapped and not, greedy and sampled; prints the tokens the grammars refused (a mask not applied) and
how many replies parse. Usage: python3 bench/gpu/constrained_check.py [MODEL] --tokenizer DIR"""

import argparse
import gc
import itertools
import json
import logging

import torch

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.sampling_params import StructuredOutput

parser = argparse.ArgumentParser()
parser.add_argument("model", nargs="?", default="llama-3.2-1b")
parser.add_argument("--tokenizer", required=True)
args = parser.parse_args()


class Refusals(logging.Handler):
    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "refused" in record.getMessage():
            Refusals.count += 1


logging.getLogger("pyinfer.engine.structured_output").addHandler(Refusals())
schema = {
    "type": "object",
    "properties": {"kind": {"enum": ["cat", "dog"]}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["kind", "n"],
    "additionalProperties": False,
}
constraint = StructuredOutput(kind="json", spec=json.dumps(schema))
prompts = [[1, *range(10 + i, 30 + 2 * i)] for i in range(8)]
for workers, eager, overlap in itertools.product((0, 2), (False, True), (True, False)):
    llm = LLM(
        args.model,
        load_format="dummy",
        tokenizer=args.tokenizer,
        device="cuda",
        gpu_memory_utilization=0.3,
        grammar_workers=workers,
        enforce_eager=eager,
        overlap_scheduling=overlap,
    )
    for temperature in (0.0, 1.0):
        Refusals.count = 0
        params = [
            SamplingParams(temperature=temperature, seed=i, max_tokens=120, structured=constraint) for i in range(8)
        ]
        outs = [r.outputs[0] for r in llm.generate(prompts, params)]
        parsed = 0
        for out in outs:
            try:
                json.loads(out.text)
                parsed += 1
            except ValueError:
                pass
        print(
            f"workers {workers} eager {eager} overlap {overlap} temperature {temperature}: "
            f"refusals {Refusals.count}, parsed {parsed}/8, finish {[o.finish_reason for o in outs]}, "
            f"first {outs[0].text[:60]!r}",
            flush=True,
        )
    llm.engine.close()
    del llm
    gc.collect()
    torch.cuda.empty_cache()
