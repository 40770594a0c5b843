"""What attention needs to know about one step's batch, whatever the backend. Built once per step by the
model runner; each backend extends it with its own fields (AttentionBackend.build_metadata)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Sequences are ordered decodes first (one query token each), then prefill chunks.

    Device tensors: slot_mapping [T] (cache slot of every new token; -1 skips), seq_lens [B] (KV
    length after this step), block_tables [B, max_blocks] (padded with 0), query_start_loc [B+1]
    (row offsets into the step's tokens); all int64. Host lists mirror what the reference loops need.
    """

    slot_mapping: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    num_decodes: int
    query_lens: list[int]
    seq_lens_host: list[int]
    block_size: int
    query_start_loc: torch.Tensor | None = None
    max_query_len: int = 1

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)
