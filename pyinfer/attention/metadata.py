"""What attention needs to know about one step's batch. Built once per step by the model runner."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Sequences are ordered decodes first (one query token each), then prefill chunks.

    Device tensors: slot_mapping [T] (cache slot of every new token), seq_lens [B] (KV length after
    this step), block_tables [B, max_blocks] (int32, padded with 0). Host lists mirror what loops need.
    """

    slot_mapping: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    num_decodes: int
    query_lens: list[int]
    seq_lens_host: list[int]
    block_size: int

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)
