"""SiLU(gate) * up on a merged gate_up tensor."""

import torch
import torch.nn.functional as F
from torch import nn

from pyinfer.kernels import triton_enabled
from pyinfer.kernels.cpu import cpu_ops


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if triton_enabled(x):
            from pyinfer.kernels.elementwise import silu_and_mul

            return silu_and_mul(x)
        if x.device.type == "cpu" and x.dim() == 2 and (ops := cpu_ops()) is not None:
            return ops.silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
