"""Token embedding and LM head, vocab-parallel ready (one rank today)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyinfer.distributed import SINGLE, ParallelGroup
from pyinfer.layers.linear import ColumnParallelLinear


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, group: ParallelGroup = SINGLE):
        super().__init__()
        assert group.size == 1, "vocab-parallel embedding is not built yet"
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.weight)


class LMHead(ColumnParallelLinear):
    """Projects hidden states to logits (vocab rows split across the group, as a column-parallel linear).

    Shares the embedding's weight when tied; on the CPU it may hold int8 weights instead (for a tied
    head a quantized copy: the embedding keeps its dense table for lookups).
    """

    def __init__(self, vocab_size: int, hidden_size: int, group: ParallelGroup = SINGLE):
        assert group.size == 1, "vocab-parallel LM head is not built yet"
        super().__init__(hidden_size, vocab_size, group)
