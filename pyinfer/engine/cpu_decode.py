"""The CPU's fused decode: in a decode step of a model whose linears are all 4-bit blocks, each decoder
layer runs as one C++ call (decode_layer: the same kernels in the same order as the Python layer, without
its ~30 Python-level calls). A hook of the model runner; the model itself stays device-neutral."""

from __future__ import annotations

import torch

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.quantization import PANEL, Int4Blocks
from pyinfer.models.llama import LlamaDecoderLayer, LlamaForCausalLM


def layer_inputs(layer: LlamaDecoderLayer) -> tuple | None:
    """A layer's own inputs to decode_layer (norm weights and eps, each linear's {codes, d, m}, head
    counts, rotary table, scale), or None when the layer cannot run as one call."""
    attn, mlp = layer.self_attn, layer.mlp
    linears = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
    usable = (
        all(isinstance(linear.quantized, Int4Blocks) for linear in linears)
        and all(linear.quantized.out_features % PANEL == 0 for linear in linears)  # whole panels: no padding
        and layer.group.size == 1
        and attn.attn.head_dim in (64, 128)
    )
    if not usable:
        return None
    return (
        layer.input_layernorm.weight,
        layer.input_layernorm.eps,
        layer.post_attention_layernorm.weight,
        layer.post_attention_layernorm.eps,
        *([w.quantized.codes, w.quantized.d, w.quantized.m] for w in linears),
        attn.attn.num_heads,
        attn.attn.num_kv_heads,
        attn.attn.rotary.cos_sin,
        attn.attn.scale,
    )


class FusedCpuDecode:
    """The model's forward pass for the decode steps it applies to, each layer one decode_layer call."""

    def __init__(self, model: LlamaForCausalLM, inputs: list[tuple]):
        self.model = model
        self.inputs = inputs  # per layer; the weights do not change after loading
        self.decode_layer = cpu_ops().decode_layer

    @classmethod
    def for_model(cls, model: LlamaForCausalLM) -> FusedCpuDecode | None:
        """The hook for a CPU model on one rank whose every layer qualifies, where the C++ kernels built."""
        if next(model.parameters()).device.type != "cpu" or cpu_ops() is None:
            return None
        inputs = [layer_inputs(layer) for layer in model.layers]
        return None if None in inputs else cls(model, inputs)

    @staticmethod
    def applies(meta: AttentionMetadata) -> bool:
        """Decode steps, of any size: the integer kernels take a row per sequence faster than a GEMM on
        dequantized weights at the CPU's default 64 sequences too (bench/results/2026-12-05-cpu-session14.md);
        the GEMM serves prompts, whose many rows pay for the dequantizing."""
        return meta.num_decodes == meta.num_seqs

    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the model's forward returns: the last layer's output and the residual stream."""
        x, residual = self.model.embed_tokens(input_ids), None
        step = (meta.slot_mapping, meta.block_tables, meta.seq_lens)
        for layer, inputs in zip(self.model.layers, self.inputs, strict=True):
            kv_cache = layer.self_attn.attn.kv_cache
            x, residual = self.decode_layer(x, residual, positions, kv_cache, *step, *inputs)
        return x, residual
