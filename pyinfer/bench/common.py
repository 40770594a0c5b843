"""Shared pieces of the offline benchmarks: random prompts, the engine, the transformers reference."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from pyinfer.config import engine_config_from_args
from pyinfer.heap import freeze_heap


def ms_per_call(fn: Callable[[], object], reps: int) -> float:
    """Mean wall time of fn in ms, over reps calls after one warm-up call (for CPU kernel probes)."""
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def random_prompts(n: int, lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randint(100, vocab - 100, (lengths[i % len(lengths)],), generator=gen).tolist()
        for i in range(n)
    ]


def closed_loop(
    engine, prompts: list[list[int]], params, in_flight: int, prefix: str, added: dict[str, float]
) -> Iterator[tuple[list, float]]:
    """The prompts through an LLMEngine as a load client with `in_flight` streams sends them: that many
    at once, then a new one as one finishes. Yields each step's outputs and its wall time in ms; `added`
    gets each request's id and time of arrival."""
    pending = list(enumerate(prompts))

    def add() -> None:
        i, prompt = pending.pop(0)
        engine.add_request(f"{prefix}-{i}", prompt, params)
        added[f"{prefix}-{i}"] = time.perf_counter()

    for _ in range(min(in_flight, len(pending))):
        add()
    while engine.has_unfinished():
        start = time.perf_counter()
        outputs = engine.step()
        yield outputs, (time.perf_counter() - start) * 1e3
        for out in outputs:
            if out.finish_reason is not None and pending:
                add()


def make_llm(args: argparse.Namespace):
    from pyinfer.engine.llm import LLM

    start = time.perf_counter()
    llm = LLM(**vars(engine_config_from_args(args)))
    freeze_heap()
    print(
        f"engine ready in {time.perf_counter() - start:.1f}s on {llm.engine.device}, "
        f"dtype {next(llm.engine.runner.model.parameters()).dtype}"
    )
    return llm


def load_hf_reference(llm, dtype_name: str):
    """transformers' own model on the same weights (dummy models: a random model of the same shape)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    engine = llm.engine
    dtype = getattr(torch, dtype_name)
    path = Path(engine.model_path)
    if engine.load_format == "gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    elif engine.load_format == "hf":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        cfg = LlamaConfig(**json.loads(path.read_text()))
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.to(engine.device).eval()


def hf_generate_seconds(model, prompts: list[list[int]], new_tokens: int) -> float:
    """Wall time of one batched `generate` (left-padded), exactly new_tokens per sequence."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    _sync(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    _sync(model.device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
