"""Token embedding and LM head, vocab-parallel ready (one rank today)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyinfer.distributed import SINGLE, ParallelGroup


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, group: ParallelGroup = SINGLE):
        super().__init__()
        assert group.size == 1, "vocab-parallel embedding is not built yet"
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.weight)


class LMHead(VocabEmbedding):
    """Projects hidden states to logits; shares the embedding's weight when tied."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)
