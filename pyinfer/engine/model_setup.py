"""Which device and dtype a run takes, and the loading of one rank's shard of the model in them."""

from __future__ import annotations

import os

import torch

from pyinfer.config import EngineConfig
from pyinfer.distributed import ParallelGroup
from pyinfer.kernels.cpu import cpu_has_bf16, cpu_ops
from pyinfer.layers import quantization
from pyinfer.models.llama import LlamaForCausalLM
from pyinfer.models.loader import load_model


def load_shard(
    config: EngineConfig, model_path: str, load_format: str, device: torch.device, group: ParallelGroup
) -> LlamaForCausalLM:
    """This rank's shard of the model (all of it for a group of one), in the dtype the config asks for."""
    # A GGUF's 4-bit blocks stay 4-bit on the CPU, in the default dtype too, except on the exact
    # path: --dtype float32 (or float16) without quantization.
    keep_file_blocks = config.dtype in ("auto", "bfloat16") or config.quantization != "none"
    quantized = keep_file_blocks if load_format == "gguf" else config.quantization != "none"
    dtype = resolve_dtype(
        config.dtype, device, integer_weights=quantized and quantization.integer_kernels_wanted()
    )
    if device.type == "cpu" and group.size > 1:  # the ranks share the host's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // group.size))
    return load_model(model_path, load_format, dtype, device, config.quantization, keep_file_blocks, group)


def rank_device(device: torch.device, rank: int) -> torch.device:
    """A rank's device: the rank-th GPU counted from the configured one; the CPU for every rank."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", (device.index or 0) + rank)


def resolve_device(device: str | None) -> torch.device:
    """The configured device; by default CUDA when there is one."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str, device: torch.device, integer_weights: bool = False) -> torch.dtype:
    """For "auto": bf16 on the GPU and on CPUs with bf16 instructions, fp32 on other CPUs, and fp32 wherever
    our integer kernels run the quantized weights: they round the activations to int8 per group
    themselves, so bf16 buys their matmuls nothing, and its rounding of the residual stream on top
    doubles the logits' error of the dense steps (bench/results/2026-12-04-cpu-int4-accuracy.md)."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_bf16() and not integer_weights else torch.float32


def resolve_kv_cache_dtype(
    kv_cache_dtype: str, model_dtype: torch.dtype, device: torch.device, quantized_weights: bool
) -> torch.dtype:
    """For "auto": the model's dtype, but fp16 under quantized weights computing in fp32 on the CPU where
    the C++ decode attention runs: a decode step reads the whole cache, and fp16 halves its bytes (as
    llama.cpp keeps it). Unquantized fp32 stays exact throughout. A GPU's Triton kernels read the
    model's dtype only."""
    if kv_cache_dtype == "auto":
        narrow = device.type == "cpu" and quantized_weights and cpu_ops() is not None
        return torch.float16 if narrow and model_dtype == torch.float32 else model_dtype
    chosen = getattr(torch, kv_cache_dtype)
    if device.type == "cuda" and chosen != model_dtype:
        raise ValueError(
            f"on a GPU the KV cache is in the model's dtype ({model_dtype}), not {kv_cache_dtype}"
        )
    if chosen != model_dtype and model_dtype != torch.float32:
        raise ValueError(
            f"a KV cache of another dtype than the model's ({model_dtype}) needs a float32 model"
        )
    return chosen
