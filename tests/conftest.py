"""Shared fixtures: the embedded SmolLM2, and tiny random Llama models written in Hugging Face format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    # Kernel tests run through Triton's interpreter, which newer Triton reads at import time.
    os.environ.setdefault("TRITON_INTERPRET", "1")


TINY_LLAMA = {  # GQA 4:2, three layers: fast enough for exact CPU parity tests
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
}


def write_random_llama(
    folder: Path, *, std: float, seed: int = 0, dtype: torch.dtype = torch.float32, **config
) -> Path:
    """A random Llama saved with transformers' own save_pretrained (config.json + safetensors).

    Matrices are drawn with `std` (larger than the default init, so that logits are far from uniform),
    norm weights uniformly in [0.5, 1.5].
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    return folder


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


@pytest.fixture(scope="session", params=["tied", "untied-llama3-rope"])
def tiny_llama(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "tied":
        return write_random_llama(folder, std=0.2, tie_word_embeddings=True, **TINY_LLAMA)
    return write_random_llama(
        folder, std=0.2, seed=1, tie_word_embeddings=False, rope_scaling=LLAMA3_SCALING, **TINY_LLAMA
    )


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from pyinfer.model_files import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def smollm2_llm():
    """One fp32 engine on the embedded model, shared by the engine tests (they must leave it idle)."""
    from pyinfer.engine.llm import LLM

    return LLM(dtype="float32", device="cpu", max_num_seqs=16, kv_cache_memory_gb=0.5)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path):
    """transformers' own GGUF loading of the same file: the reference."""
    from transformers import AutoModelForCausalLM

    path = Path(smollm2_path)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
