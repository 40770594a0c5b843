"""Token embedding and LM head, split across the group by vocabulary rows (vocab_shard)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyinfer.distributed import SINGLE, ParallelGroup, vocab_shard
from pyinfer.layers.linear import ColumnParallelLinear


def load_vocab_rows(param: torch.Tensor, loaded: torch.Tensor, start: int) -> None:
    """This rank's rows of a [vocab, hidden] tensor; the padding past the vocabulary stays zero."""
    rows = max(0, min(param.shape[0], loaded.shape[0] - start))
    param.data[:rows].copy_(loaded.narrow(0, start, rows))
    param.data[rows:].zero_()


class VocabEmbedding(nn.Module):
    """Each rank looks up the ids of its shard (zeros for the others'); the all-reduce adds them up."""

    def __init__(self, vocab_size: int, hidden_size: int, group: ParallelGroup = SINGLE):
        super().__init__()
        self.group = group
        self.vocab_start, rows = vocab_shard(vocab_size, group)
        self.weight = nn.Parameter(torch.empty(rows, hidden_size), requires_grad=False)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id: str | None = None) -> None:
        load_vocab_rows(param, loaded, self.vocab_start)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.group.size == 1:
            return F.embedding(token_ids, self.weight)
        local = token_ids - self.vocab_start
        outside = (local < 0) | (local >= self.weight.shape[0])
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.group.all_reduce(x.masked_fill_(outside[:, None], 0))


class LMHead(ColumnParallelLinear):
    """Projects hidden states to logits: each rank its vocabulary shard, gathered into the full row.

    Shares the embedding's weight when tied; on the CPU it may hold int8 weights instead (for a tied
    head a quantized copy: the embedding keeps its dense table for lookups).
    """

    def __init__(self, vocab_size: int, hidden_size: int, group: ParallelGroup = SINGLE):
        start, rows = vocab_shard(vocab_size, group)
        super().__init__(hidden_size, vocab_size, group, {None: (start, rows)})
        self.vocab_size = vocab_size

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id: str | None = None) -> None:
        load_vocab_rows(param, loaded, self.shard_sources[None])

    def gather(self, logits: torch.Tensor) -> torch.Tensor:
        """Every rank's shard of the logits joined: [rows, vocab] on each rank."""
        if self.group.size == 1:
            return logits
        return self.group.all_gather(logits)[:, : self.vocab_size]
