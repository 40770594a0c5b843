"""RMSNorm, optionally fused with the residual add that precedes it."""

from __future__ import annotations

import torch
from torch import nn

from pyinfer.kernels import triton_enabled
from pyinfer.kernels.cpu import cpu_ops


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Without residual: norm(x). With it: (norm(x + residual), x + residual)."""
        if triton_enabled(x):
            from pyinfer.kernels.elementwise import rms_norm

            return rms_norm(x, self.weight, self.eps, residual)
        if x.device.type == "cpu" and x.dim() == 2 and (ops := cpu_ops()) is not None:
            out = ops.rms_norm(x, residual, self.weight, self.eps)
            return out[0] if residual is None else (out[0], out[1])
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
