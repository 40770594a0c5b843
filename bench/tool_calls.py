"""Tool calls decoded under their grammar, read back by the server's parser: how many of N seeded
requests give a valid call (jsonschema), per format, and the mean time per request in one batch.

Usage: python bench/tool_calls.py [MODEL] [--device cuda --load-format dummy --tokenizer DIR]
   (as bench/structured_output.py; random weights exercise the grammar hardest: every token is a guess)
"""

import argparse
import json
import time

import jsonschema

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.server.protocol_tools import FunctionDefinition, ToolRequest
from pyinfer.server.tool_formats import FORMATS

PLAN = FunctionDefinition(
    name="plan_trip",
    parameters={
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "by_train": {"type": "boolean"}},
        "required": ["city", "by_train"],
    },
)
CANCEL = FunctionDefinition(name="cancel", parameters={"type": "object", "properties": {}})
SCHEMAS = {f.name: f.parameters for f in (PLAN, CANCEL)}

parser = argparse.ArgumentParser()
parser.add_argument("model", nargs="?")
parser.add_argument("--device", default="cpu")
parser.add_argument("--load-format", default="auto")
parser.add_argument("--tokenizer")
parser.add_argument("--requests", type=int, default=32)
args = parser.parse_args()
llm = LLM(args.model, device=args.device, load_format=args.load_format, tokenizer=args.tokenizer)

print(f"device {llm.engine.device}, model {llm.engine.model_path}")
for name, fmt in FORMATS.items():
    for choice in ("required", "plan_trip"):
        tools = ToolRequest.of([PLAN, CANCEL], choice, choice == "plan_trip", parallel=False)
        params = [
            SamplingParams(
                temperature=1.0,
                seed=seed,
                max_tokens=400,
                structured=tools.constraint(fmt, None),
                skip_special_tokens=False,
            )
            for seed in range(args.requests)
        ]
        start = time.perf_counter()
        outputs = llm.generate([[1, 2, 3, 4, 5]] * args.requests, params)
        elapsed = time.perf_counter() - start
        valid, first_invalid = 0, None
        for out in outputs:
            reader = tools.parser(fmt, on_failure=lambda: None)
            parsed = reader.feed(out.outputs[0].text)
            parsed.join(reader.finish())
            calls = [c for c in parsed.calls if c.name is not None]
            try:
                assert len(calls) == 1 and not parsed.content and out.outputs[0].finish_reason == "stop"
                arguments = "".join(c.arguments for c in parsed.calls)
                jsonschema.validate(json.loads(arguments), SCHEMAS[calls[0].name])
                valid += 1
            except (AssertionError, ValueError, jsonschema.ValidationError):
                first_invalid = first_invalid or out.outputs[0].text
        print(
            f"{name:12s} {choice:9s}: {valid}/{args.requests} valid calls, "
            f"{elapsed / args.requests * 1e3:.1f} ms per request in one batch"
        )
        if first_invalid is not None:
            print(f"  first invalid reply: {first_invalid!r}")
