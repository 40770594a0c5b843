"""LlamaForCausalLM: Llama 2/3/3.1/3.2, SmolLM2 and Mistral (same graph, different configs)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from pyinfer.attention.layer import Attention
from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.distributed import SINGLE, WEIGHT_GROUP, ParallelGroup, head_shard, shard_range
from pyinfer.layers.activation import SiluAndMul
from pyinfer.layers.embedding import LMHead, VocabEmbedding
from pyinfer.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from pyinfer.layers.norm import RMSNorm
from pyinfer.layers.rotary import RopeInputs, RotaryEmbedding
from pyinfer.models.model_config import ModelConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, group: ParallelGroup):
        super().__init__()
        shard = head_shard(cfg.num_attention_heads, cfg.num_key_value_heads, group)
        self.q_size = shard.num_heads * cfg.head_dim
        self.kv_size = shard.num_kv_heads * cfg.head_dim
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, shard, group)
        self.o_proj = RowParallelLinear(
            cfg.num_attention_heads * cfg.head_dim,
            cfg.hidden_size,
            group,
            columns=(shard.q_start * cfg.head_dim, self.q_size),
        )
        self.attn = Attention(shard.num_heads, shard.num_kv_heads, cfg.head_dim, rotary)

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
        # whole 4-bit blocks per rank: down_proj's shard never splits one
        self.gate_up_proj = MergedColumnParallelLinear(
            cfg.hidden_size, {"gate": size, "up": size}, group, align=WEIGHT_GROUP
        )
        columns = shard_range(size, group, align=WEIGHT_GROUP)
        self.down_proj = RowParallelLinear(size, cfg.hidden_size, group, columns)
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

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the last layer's output and the residual stream, each [T, hidden], before the final
        norm: compute_logits takes the same rows of both."""
        x, residual = self.embed_tokens(input_ids), None
        rope = self.rotary.prepare(positions, x.dtype)
        for layer in self.layers:
            x, residual = layer(rope, x, residual, meta)
        return x, residual

    def compute_logits(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Logits of norm(x + residual), the final norm fused into the LM head at batch 1 on the GPU."""
        return self.lm_head.gather(self.lm_head.normed(x, residual, self.norm)[0])

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.layers]
