"""LlamaForCausalLM: Llama 2/3/3.1/3.2, SmolLM2 and Mistral (same graph, different configs)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from pyinfer.attention.layer import Attention
from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.distributed import SINGLE, ParallelGroup
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.activation import SiluAndMul
from pyinfer.layers.embedding import LMHead, VocabEmbedding
from pyinfer.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from pyinfer.layers.norm import RMSNorm
from pyinfer.layers.quantization import BLOCKS_DENSE_MIN_ROWS, Int4Blocks
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding
from pyinfer.models.model_config import ModelConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, group: ParallelGroup):
        super().__init__()
        self.num_heads = cfg.num_attention_heads // group.size
        self.num_kv_heads = max(1, cfg.num_key_value_heads // group.size)
        self.q_size = self.num_heads * cfg.head_dim
        self.kv_size = self.num_kv_heads * cfg.head_dim
        self.qkv_proj = QKVParallelLinear(
            cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, group
        )
        self.o_proj = RowParallelLinear(cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, group)
        self.attn = Attention(self.num_heads, self.num_kv_heads, cfg.head_dim, rotary)

    def forward(
        self,
        rope: RopeInputs,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        norm: RMSNorm,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of norm(x + residual); returns it with the new residual (the norm runs inside
        qkv_proj's kernel at batch 1 on the GPU)."""
        qkv, residual = self.qkv_proj.normed(x, residual, norm)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        return self.o_proj(self.attn(q, k, v, rope, meta)), residual


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, group: ParallelGroup):
        super().__init__()
        size = cfg.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, {"gate": size, "up": size}, group)
        self.down_proj = RowParallelLinear(size, cfg.hidden_size, group)
        self.act = SiluAndMul()

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor, norm: RMSNorm
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP of norm(x + residual); returns it with the new residual (the norm and SiLU-and-mul run
        inside gate_up_proj's kernel at batch 1 on the GPU)."""
        h, residual = self.gate_up_proj.normed(x, residual, norm, self.act)
        return self.down_proj(h), residual


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, group: ParallelGroup):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, rotary, group)
        self.mlp = LlamaMLP(cfg, group)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.group = group

    def forward(
        self, rope: RopeInputs, x: torch.Tensor, residual: torch.Tensor | None, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, residual = self.self_attn(rope, x, residual, self.input_layernorm, meta)
        return self.mlp(x, residual, self.post_attention_layernorm)

    def cpu_decode_inputs(self) -> tuple | None:
        """This layer's own inputs to the C++ decode_layer (norm weights and eps, each linear's {codes, d,
        m}, head counts, rotary table, scale), which runs the layer's kernels in its order as one call:
        when all four linears are 4-bit blocks (CPU only) on one rank and the C++ kernels are built."""
        attn, mlp = self.self_attn, self.mlp
        linears = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
        usable = (
            all(isinstance(linear.quantized, Int4Blocks) for linear in linears)
            and self.group.size == 1
            and attn.attn.head_dim in (64, 128)
            and cpu_ops() is not None
        )
        if not usable:
            return None
        return (
            self.input_layernorm.weight,
            self.input_layernorm.eps,
            self.post_attention_layernorm.weight,
            self.post_attention_layernorm.eps,
            *([w.quantized.codes, w.quantized.d, w.quantized.m] for w in linears),
            attn.attn.num_heads,
            attn.attn.num_kv_heads,
            attn.attn.rotary.cos_sin,
            attn.attn.scale,
        )


class LlamaForCausalLM(nn.Module):
    # checkpoint name fragment -> (our parameter name fragment, shard id)
    packed_modules: ClassVar[dict[str, tuple[str, str]]] = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", "gate"),
        "up_proj": ("gate_up_proj", "up"),
    }

    def __init__(self, cfg: ModelConfig, group: ParallelGroup = SINGLE):
        super().__init__()
        self.config = cfg
        self.rotary = RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling
        )
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size, group)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, self.rotary, group) for _ in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = LMHead(cfg.vocab_size, cfg.hidden_size, group)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self._cpu_decode_inputs: list[tuple] | None = None  # per layer; [] where unusable; read once

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the last layer's output and the residual stream, each [T, hidden], before the final
        norm: compute_logits takes the same rows of both."""
        x, residual = self.embed_tokens(input_ids), None
        rope = self.rotary.prepare(positions, x.dtype)
        if cpu_layers := self._cpu_decode_layers(rope, x, meta):
            decode_layer = cpu_ops().decode_layer
            for layer, inputs in zip(self.layers, cpu_layers, strict=True):
                kv_cache = layer.self_attn.attn.kv_cache
                step = (rope, kv_cache, meta.slot_mapping, meta.block_tables, meta.seq_lens)
                x, residual = decode_layer(x, residual, *step, *inputs)
            return x, residual
        for layer in self.layers:
            x, residual = layer(rope, x, residual, meta)
        return x, residual

    def _cpu_decode_layers(self, rope: RopeInputs, x: torch.Tensor, meta: AttentionMetadata) -> list[tuple]:
        """Every layer's decode_layer inputs when this step runs each layer as one C++ call (about 30
        Python-level calls fewer a layer: a fifth of a SmolLM2 decode step on 2 cores): a CPU decode step
        below the rows where the 4-bit linears switch to a dense GEMM, on 4-bit block weights; else []."""
        if self._cpu_decode_inputs is None:  # the weights do not change after loading
            inputs = [layer.cpu_decode_inputs() for layer in self.layers]
            self._cpu_decode_inputs = [] if None in inputs else inputs
        decode_step = meta.num_decodes == meta.num_seqs and x.shape[0] < BLOCKS_DENSE_MIN_ROWS
        # rope is the positions themselves where the C++ rotary kernel runs
        return self._cpu_decode_inputs if decode_step and isinstance(rope, torch.Tensor) else []

    def compute_logits(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Logits of norm(x + residual), the final norm fused into the LM head at batch 1 on the GPU."""
        return self.lm_head.normed(x, residual, self.norm)[0]

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.layers]
