"""The int4 CPU kernel against unpacking to bf16 + one dense GEMM, on SmolLM2's matrices, by row count:
where DENSE_MIN_ROWS (pyinfer/layers/quantization.py) comes from. Prints ms per call."""

import torch
import torch.nn.functional as F

from pyinfer.bench.common import ms_per_call
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.quantization import GROUP_SIZE, TorchInt4Weights, quantize_int4

ops = cpu_ops()
assert ops is not None, "the C++ CPU kernels are not built"


def row(w: TorchInt4Weights, x: torch.Tensor) -> tuple[float, float, float]:
    """(int4 kernel, unpack + GEMM, unpack alone) in ms."""
    kernel = ms_per_call(
        lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, w.packed, GROUP_SIZE, w.scales_and_zeros), 20
    )
    unpack = ms_per_call(lambda: ops.int4_unpack(w.packed, w.scales_and_zeros, GROUP_SIZE), 20)
    dense = ms_per_call(lambda: F.linear(x, ops.int4_unpack(w.packed, w.scales_and_zeros, GROUP_SIZE)), 20)
    return kernel, dense, unpack


print(f"{'matrix':>10}{'rows':>6}{'int4 kernel':>13}{'unpack+GEMM':>13}{'unpack alone':>14}")
for n, k in [(960, 576), (3072, 576), (576, 1536)]:
    weights = TorchInt4Weights(quantize_int4(torch.randn(n, k) * 0.02), torch.bfloat16)
    for rows in (16, 32, 64, 96, 128, 512):
        kernel, dense, unpack = row(weights, torch.randn(rows, k, dtype=torch.bfloat16))
        print(f"{n:>5}x{k:<4}{rows:>6}{kernel:>13.3f}{dense:>13.3f}{unpack:>14.3f}")
