"""Find a model and load its weights: Hugging Face folder (safetensors), GGUF file, or random (dummy)."""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyinfer.distributed import SINGLE, ParallelGroup
from pyinfer.layers.linear import LinearBase
from pyinfer.layers.quantization import Int4Shard
from pyinfer.model_files import gguf_reader
from pyinfer.models.llama import LlamaForCausalLM
from pyinfer.models.model_config import ModelConfig

log = logging.getLogger(__name__)


def load_config(path: str, fmt: str) -> ModelConfig:
    if fmt == "gguf":
        return _gguf_config(gguf_reader(path))
    cfg_path = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    cfg = ModelConfig.from_json(cfg_path)
    gen_cfg = cfg_path.parent / "generation_config.json"
    if gen_cfg.exists():  # generation_config's eos list is the authoritative stop set (Llama 3 has three)
        eos = json.loads(gen_cfg.read_text()).get("eos_token_id")
        extra = [eos] if isinstance(eos, int) else (eos or [])
        cfg.eos_token_ids = sorted(set(cfg.eos_token_ids) | set(extra))
    return cfg


def load_model(
    path: str,
    fmt: str,
    dtype: torch.dtype,
    device: torch.device,
    quantization: str = "none",
    keep_file_blocks: bool = False,
    group: ParallelGroup = SINGLE,
) -> LlamaForCausalLM:
    """Loads weights in the run dtype, then applies weight-only quantization (CPU only).

    quantization "int8" / "int4" turns every linear into int8 per-channel / int4 g32 weights. With
    keep_file_blocks (CPU only), a GGUF's Q4_0/Q4_1 linears stay 4-bit from the file's own blocks; its
    linears stored in other types are then quantized as asked. Whenever a linear is quantized, the LM
    head becomes int8 per channel (a tied embedding keeps its dense table). In a tensor-parallel group
    each rank keeps its own shard of every weight (the layers' weight loaders pick it out).
    """
    if quantization != "none" and device.type != "cpu":
        raise ValueError(
            f"quantization={quantization!r} is built for the CPU only, not for device {device.type!r}"
        )
    reader = gguf_reader(path) if fmt == "gguf" else None
    cfg = load_config(path, fmt)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg, group)
    finally:
        torch.set_default_dtype(previous)
    if fmt == "dummy":
        weights = _dummy_weights(cfg, dtype, device)
    else:
        keep_int4 = device.type == "cpu" and keep_file_blocks
        weights = _gguf_weights(reader, cfg, keep_int4) if reader else _hf_weights(path)
    _load_weights(model, weights)
    _quantize(model, quantization, _gguf_int4_types(reader) if reader else "")
    return model.eval()


def _quantize(model: LlamaForCausalLM, method: str, file_blocks: str) -> None:
    """Quantizes the dense linears as asked, then the LM head to int8 if any linear is quantized,
    and logs what each weight became. `file_blocks` names the GGUF types kept 4-bit at loading."""
    dense = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    linears = [m for m in model.modules() if isinstance(m, LinearBase) and m is not model.lm_head]
    kinds: Counter[str] = Counter()
    for linear in linears:
        if linear.quantized is not None:
            kind = f"{linear.quantized.description} (GGUF {file_blocks} blocks)"
        elif method != "none":
            linear.quantize(method)
            kind = linear.quantized.description
        else:
            kind = dense
        kinds[kind] += 1
    if any(linear.quantized is not None for linear in linears):
        model.lm_head.quantize("int8")
    head = model.lm_head.quantized.description if model.lm_head.quantized else dense
    summary = ", ".join(f"{n} linears {kind}" for kind, n in kinds.items())
    log.info("weights: %s, lm_head %s, embedding and norms %s", summary, head, dense)


def _load_weights(model: LlamaForCausalLM, weights: Iterator[tuple[str, torch.Tensor | Int4Shard]]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[str] = set()
    quantized: dict[str, LinearBase] = {}
    for name, tensor in weights:
        if "rotary_emb" in name:
            continue
        name = name.removeprefix("model.")
        shard_id = None
        for ckpt, (ours, shard) in model.packed_modules.items():
            if ckpt in name:
                name, shard_id = name.replace(ckpt, ours), shard
                break
        if name not in params:
            raise ValueError(f"unexpected weight {name!r} in checkpoint")
        param = params[name]
        loaded.add(name)
        if isinstance(tensor, Int4Shard):
            quantized[name] = _owner(model, name)
            quantized[name].load_int4_shard(tensor, shard_id)
            continue
        loader = getattr(_owner(model, name), "weight_loader", None)
        tensor = tensor.to(param.dtype)
        if loader is not None:
            loader(param, tensor.to(param.device), shard_id)
        else:
            if param.shape != tensor.shape:
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(param.shape)}"
                )
            param.data.copy_(tensor)
    for linear in quantized.values():
        linear.finish_int4()
    if model.config.tie_word_embeddings:
        loaded.add("lm_head.weight")
    elif "lm_head.weight" not in loaded and "embed_tokens.weight" in loaded:
        # Some checkpoints tie without saying so (no lm_head tensor): share the embedding.
        model.lm_head.weight = model.embed_tokens.weight
        loaded.add("lm_head.weight")
    missing = {n for n in params if not n.endswith(("qkv_proj.weight", "gate_up_proj.weight"))} - loaded
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    return model.get_submodule(param_name.rsplit(".", 1)[0])


def _dummy_weights(
    cfg: ModelConfig, dtype: torch.dtype, device: torch.device
) -> Iterator[tuple[str, torch.Tensor]]:
    """Random weights under a checkpoint's names and whole shapes (speed does not depend on values), each
    drawn from a generator seeded by its name: every rank of any tensor-parallel size loads its shard of
    the same model, through the same path as a real checkpoint."""
    hidden, hd, inter = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, hidden), "model.norm.weight": (hidden,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, hidden)
    for i in range(cfg.num_hidden_layers):
        layer = f"model.layers.{i}."
        shapes |= {
            layer + "self_attn.q_proj.weight": (cfg.num_attention_heads * hd, hidden),
            layer + "self_attn.k_proj.weight": (cfg.num_key_value_heads * hd, hidden),
            layer + "self_attn.v_proj.weight": (cfg.num_key_value_heads * hd, hidden),
            layer + "self_attn.o_proj.weight": (hidden, cfg.num_attention_heads * hd),
            layer + "mlp.gate_proj.weight": (inter, hidden),
            layer + "mlp.up_proj.weight": (inter, hidden),
            layer + "mlp.down_proj.weight": (hidden, inter),
            layer + "input_layernorm.weight": (hidden,),
            layer + "post_attention_layernorm.weight": (hidden,),
        }
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            yield name, torch.ones(shape, dtype=dtype, device=device)
        else:
            gen = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()))
            yield name, torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=gen)


def _hf_weights(folder: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    root = Path(folder)
    index = root / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    for file in files:
        with safe_open(str(root / file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, f.get_tensor(name)


# GGUF tensor names (llama.cpp) -> Hugging Face names
_GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GGUF_INT4_TYPES = ("Q4_0", "Q4_1")  # kept 4-bit on the CPU (torch's int4 kernel, groups of 32)
_GGUF_TOP_NAMES = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}


def _gguf_config(reader) -> ModelConfig:
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported (only llama)")

    def get(key: str, default=None):
        return meta.get(f"llama.{key}", default)

    hidden, heads = get("embedding_length"), get("attention.head_count")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    vocab = get("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    scaling = None
    if get("rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": get("rope.scaling.factor")}
    for t in reader.tensors:  # Llama 3.1+ GGUFs carry llama3 scaling as per-frequency divisors
        if t.name == "rope_freqs.weight":
            scaling = {"rope_type": "factors", "factors": np.asarray(t.data, dtype=np.float32).tolist()}
    eos = [
        int(reader.fields[k].contents())
        for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if k in reader.fields
    ]
    return ModelConfig(
        hidden_size=hidden,
        intermediate_size=get("feed_forward_length"),
        num_hidden_layers=get("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=get("attention.head_count_kv", heads),
        vocab_size=vocab,
        head_dim=get("attention.key_length") or get("rope.dimension_count") or hidden // heads,
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=get("rope.freq_base", 10000.0),
        rope_scaling=scaling,
        max_position_embeddings=get("context_length", 4096),
        tie_word_embeddings=not has_output,
        eos_token_ids=sorted(set(eos)),
    )


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's interleaving of q/k rows back to Hugging Face's rotary half-split layout."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_weights(
    reader, cfg: ModelConfig, keep_int4: bool
) -> Iterator[tuple[str, torch.Tensor | Int4Shard]]:
    from gguf.quants import dequantize

    for t in reader.tensors:
        stem, _, kind = t.name.rpartition(".")
        parts = stem.split(".")
        if parts[0] == "blk":
            layer, short = parts[1], parts[2]
            hf = f"model.layers.{layer}.{_GGUF_LAYER_NAMES[short]}.{kind}"
        elif stem in _GGUF_TOP_NAMES:
            hf = f"model.{_GGUF_TOP_NAMES[stem]}.{kind}" if stem != "output" else f"lm_head.{kind}"
            short = stem
        elif stem == "rope_freqs":
            continue
        else:
            raise ValueError(f"unknown GGUF tensor {t.name!r}")
        heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}.get(short)
        if keep_int4 and t.tensor_type.name in _GGUF_INT4_TYPES and stem not in _GGUF_TOP_NAMES:
            parts = _q4_blocks(np.asarray(t.data), t.tensor_type.name == "Q4_1")
            if heads:
                parts = [_unpermute(p, heads) for p in parts]
            yield hf, Int4Shard(*(torch.from_numpy(np.ascontiguousarray(p)) for p in parts))
            continue
        w = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        if heads:
            w = _unpermute(w, heads)
        yield hf, torch.from_numpy(np.array(w, dtype=np.float32))


def _gguf_int4_types(reader) -> str:
    """The GGUF types in the file that can stay 4-bit, e.g. "Q4_1"."""
    return "/".join(sorted({t.tensor_type.name for t in reader.tensors} & set(_GGUF_INT4_TYPES)))


def _q4_blocks(data: np.ndarray, has_min: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GGUF Q4_0 / Q4_1 rows as (q [N, K] in 0..15, scale, zero) with w = (q - 8) * scale + zero.

    A block holds 32 weights: f16 scale d, (Q4_1: f16 min m), then 16 bytes whose low nibbles are
    weights 0..15 and high nibbles 16..31. Q4_0: w = (q - 8) d; Q4_1: w = q d + m = (q - 8) d + (m + 8 d).
    """
    header = 4 if has_min else 2
    rows = data.shape[0]
    blocks = data.reshape(rows, -1, header + 16)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    zero = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) + 8 * d if has_min else 0 * d
    qs = blocks[..., header:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(rows, -1)
    return q, d, zero
