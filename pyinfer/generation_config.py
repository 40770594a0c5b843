"""The sampling defaults a model recommends, applied to requests that leave those fields out.

Where they come from (`--generation-config auto`, the default, as vLLM reads them): a Hugging Face
folder's generation_config.json, a GGUF's `general.sampling.*` keys, or, for the embedded SmolLM2, ours
(EMBEDDED_MODEL_DEFAULTS). `none` keeps OpenAI's defaults (temperature 1, top_p 1); a folder path reads
that folder's generation_config.json. Torch-free: the server process reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyinfer.model_files import gguf_reader, is_default_model

# generation_config.json name -> request field
HF_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}
# GGUF metadata key -> request field (llama.cpp's names; its repeat penalty maps onto ours)
GGUF_FIELDS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}
# The embedded SmolLM2-135M-Instruct Q4_1 answers greedily: the file's weights open its answer to the
# capital of France with a near-tie ("The" or "L", which runs on "L'Étoile, la Marseillaise, ..."), so
# its model card's temperature 0.2 / top_p 0.9 often answers wrongly
# (bench/results/2026-12-04-cpu-int4-accuracy.md).
EMBEDDED_MODEL_DEFAULTS: dict[str, Any] = {"temperature": 0.0}
GENERATION_CONFIG_HELP = (
    "defaults for the sampling fields a request leaves out: auto (the model's own: its "
    "generation_config.json, a GGUF's general.sampling keys, greedy for the embedded SmolLM2), none "
    "(OpenAI's: temperature 1, top_p 1) or a folder with a generation_config.json"
)


def generation_defaults(source: str, model_path: str, load_format: str) -> dict[str, Any]:
    """The request fields (temperature, top_p, top_k, min_p, repetition_penalty, max_tokens) the model
    recommends; `source` is auto, none or a folder holding generation_config.json."""
    if source == "none" or load_format == "dummy":
        return {}
    if source != "auto":
        folder = Path(source)
        if not (folder / "generation_config.json").is_file():
            raise FileNotFoundError(f"--generation-config {source!r}: no generation_config.json there")
        return _from_hf_folder(folder)
    if load_format == "gguf":
        return dict(EMBEDDED_MODEL_DEFAULTS) if is_default_model(model_path) else _from_gguf(model_path)
    return _from_hf_folder(Path(model_path))


def with_defaults(defaults: dict[str, Any], **given: Any) -> dict[str, Any]:
    """A request's fields over the defaults: a field given as None takes the default."""
    return {**defaults, **{name: value for name, value in given.items() if value is not None}}


def _from_hf_folder(folder: Path) -> dict[str, Any]:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    return {field: config[name] for name, field in HF_FIELDS.items() if config.get(name) is not None}


def _from_gguf(path: str) -> dict[str, Any]:
    fields = gguf_reader(path).fields
    return {field: fields[key].contents() for key, field in GGUF_FIELDS.items() if key in fields}


def describe(defaults: dict[str, Any]) -> str:
    """For the start-up log: `temperature=0.0, top_p=0.9`, or OpenAI's."""
    if not defaults:
        return "OpenAI's (temperature 1, top_p 1)"
    return ", ".join(f"{name}={value}" for name, value in defaults.items())
