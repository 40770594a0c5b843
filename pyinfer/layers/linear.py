"""Linears sharded for tensor parallelism: column-parallel (merged QKV and gate-up split by heads and by
rows), row-parallel with the all-reduce of its partial sums; dense, int8 or int4 weights alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pyinfer.distributed import SINGLE, HeadShard, ParallelGroup, shard_range
from pyinfer.kernels import triton_enabled
from pyinfer.layers.quantization import (
    Int4Shard,
    QuantizedWeights,
    empty_int4_shard,
    int4_weights,
    quantize,
    quantize_int4,
)

if TYPE_CHECKING:
    from pyinfer.layers.activation import SiluAndMul
    from pyinfer.layers.norm import RMSNorm


class LinearBase(nn.Module):
    """A dense weight, or weight-only quantized weights (a GGUF's Q4 blocks, or quantized at load)."""

    weight: nn.Parameter | None
    quantized: QuantizedWeights | None = None
    int4_staging: Int4Shard | None = None
    int4_staged: set[str | None]  # shard ids placed in int4_staging

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id: str | None = None) -> None:
        raise NotImplementedError

    def load_int4_shard(self, shard: Int4Shard, shard_id: str | None) -> None:
        """Place a quantized shard where its dense rows would go (same sharding as weight_loader)."""
        if self.int4_staging is None:
            self.int4_staging, self.int4_staged = empty_int4_shard(*self.weight.shape), set()
        for staging, part in zip(self.int4_staging, shard, strict=True):
            self.weight_loader(staging, part, shard_id)
        self.int4_staged.add(shard_id)

    def finish_int4(self) -> None:
        """Pack the staged shards and drop the dense weight. Shards of a merged linear that the file
        stores in another type (loaded dense beside the Q4 ones) are quantized to int4 first."""
        for shard_id, (offset, size) in getattr(self, "shard_offsets", {}).items():
            if shard_id not in self.int4_staged:
                rows = quantize_int4(self.weight.data.narrow(0, offset, size))
                for staging, part in zip(self.int4_staging, rows, strict=True):
                    staging.narrow(0, offset, size).copy_(part)
        self._set_quantized(int4_weights(self.int4_staging, self.weight.dtype))
        self.int4_staging = None

    def quantize(self, method: str) -> None:
        """Replace the dense weight by int8 per-channel or int4 g32 weights."""
        self._set_quantized(quantize(self.weight.data, method))

    def _set_quantized(self, weights: QuantizedWeights) -> None:
        self.quantized = weights
        self.weight = None  # the dense weight is dropped (a tied embedding keeps its own reference)

    def uses_gemv(self, x: torch.Tensor) -> bool:
        """Whether this product of x runs as a (fused) GEMV kernel: batch-1 decode in a CUDA graph, on
        dense weights (quantized ones have no `weight`)."""
        if not triton_enabled(x):
            return False
        from pyinfer.kernels.gemv import use_gemv

        return use_gemv(x, self.weight)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized is not None:
            return self.quantized.mm(x)
        if self.uses_gemv(x):
            from pyinfer.kernels.gemv import gemv

            return gemv(x, self.weight)
        return F.linear(x, self.weight)


class ColumnParallelLinear(LinearBase):
    """y = x W^T with W's output rows split across the group; each rank returns its slice.

    `rows` names, per shard id, the (first row, rows) of the checkpoint's tensor this rank holds, placed
    end to end in that order (merged projections); by default an even share of one tensor."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group: ParallelGroup = SINGLE,
        rows: dict[str | None, tuple[int, int]] | None = None,
    ):
        super().__init__()
        self.group = group
        self.shard_offsets: dict[str | None, tuple[int, int]] = {}  # where each shard's rows sit here
        self.shard_sources: dict[str | None, int] = {}  # and where they start in the checkpoint's tensor
        offset = 0
        for shard_id, (start, size) in (rows or {None: shard_range(out_features, group)}).items():
            self.shard_offsets[shard_id], self.shard_sources[shard_id] = (offset, size), start
            offset += size
        self.weight = nn.Parameter(torch.empty(offset, in_features), requires_grad=False)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id: str | None = None) -> None:
        offset, size = self.shard_offsets[shard_id]
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, self.shard_sources[shard_id], size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x)

    def normed(
        self, x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm, act: SiluAndMul | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This linear of norm(x + residual), then act if given (SiLU-and-mul of a merged gate_up: the
        one activation the fused kernel knows), and x + residual, the new residual; without a
        residual, of norm(x), and x. One kernel at batch 1 on the GPU."""
        if self.uses_gemv(x):
            from pyinfer.kernels.gemv import norm_gemv

            return norm_gemv(x, residual, norm.weight, norm.eps, self.weight, gated=act is not None)
        x, residual = (norm(x), x) if residual is None else norm(x, residual)
        y = self(x)
        return (y if act is None else act(y)), residual


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of one input stored as one matrix (e.g. gate and up), each
    split the same way (in whole units of `align` rows)."""

    def __init__(
        self, in_features: int, shard_sizes: dict[str, int], group: ParallelGroup = SINGLE, align: int = 1
    ):
        rows = {name: shard_range(size, group, align) for name, size in shard_sizes.items()}
        super().__init__(in_features, sum(shard_sizes.values()), group, rows)


class QKVParallelLinear(ColumnParallelLinear):
    """Merged q, k and v projections: this rank's rows are those of its heads (`shard`)."""

    def __init__(self, hidden_size: int, head_dim: int, shard: HeadShard, group: ParallelGroup = SINGLE):
        kv = (shard.kv_start * head_dim, shard.num_kv_heads * head_dim)
        rows = {"q": (shard.q_start * head_dim, shard.num_heads * head_dim), "k": kv, "v": kv}
        super().__init__(hidden_size, sum(size for _, size in rows.values()), group, rows)


class RowParallelLinear(LinearBase):
    """y = x W^T with W's input columns split across the group (this rank's `columns`, as (start, size),
    by default an even share); the partial sums are all-reduced."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group: ParallelGroup = SINGLE,
        columns: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.group = group
        self.in_features = in_features
        self.column_start, size = columns or shard_range(in_features, group)
        self.weight = nn.Parameter(torch.empty(out_features, size), requires_grad=False)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id: str | None = None) -> None:
        # a 4-bit shard's scales have one column per 32 weights: scale the start with the part's width
        start, rest = divmod(self.column_start * loaded.shape[1], self.in_features)
        if rest:
            raise ValueError(
                f"a shard starting at column {self.column_start} splits a group of 4-bit weights: "
                "this model's 4-bit weights cannot be split across these ranks"
            )
        param.data.copy_(loaded.narrow(1, start, param.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.all_reduce(self.matmul(x))
