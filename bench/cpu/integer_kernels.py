"""Our C++ integer matmuls (4-bit and int8 blocks) on SmolLM2's matrices: the linears of one decode
step by batch size, with the bytes they read; then the 4-bit kernel against dequantize + a float GEMM
(bf16 where the CPU has it, as Int4Blocks does) by row count, where BLOCKS_DENSE_MIN_ROWS
(pyinfer/layers/quantization.py) comes from. Prints ms.

Usage: python bench/cpu/integer_kernels.py
"""

import torch
import torch.nn.functional as F

from pyinfer.bench.common import ms_per_call
from pyinfer.kernels.cpu import cpu_has_bf16, cpu_ops
from pyinfer.layers.quantization import Int4Blocks, quantize_int4, quantize_int8

ops = cpu_ops()
assert ops is not None, "the C++ CPU kernels are not built"
LAYERS, HIDDEN, VOCAB = 30, 576, 49152
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # qkv, o, gate_up, down


def blocks(n: int, k: int) -> Int4Blocks:
    return Int4Blocks(quantize_int4(torch.randn(n, k) * 0.02))


layers = [[blocks(n, k) for n, k in SHAPES] for _ in range(LAYERS)]  # distinct copies: no cache reuse
head = quantize_int8(torch.randn(VOCAB, HIDDEN) * 0.02)  # int8 blocks: the integer kernels are wanted here
step_bytes = sum(w.codes.nbytes + w.d.nbytes + w.m.nbytes for layer in layers for w in layer)
head_bytes = head.codes.nbytes + head.d.nbytes
DENSE = torch.bfloat16 if cpu_has_bf16() else torch.float32


def step_linears(x: dict[int, torch.Tensor]) -> None:
    for layer in layers:
        for w in layer:
            ops.int4_blocks_mm(x[w.codes.shape[1] * 32], w.codes, w.d, w.m, w.out_features)


def kernel_and_dense(w: Int4Blocks, x: torch.Tensor) -> tuple[float, float]:
    n = w.out_features
    kernel = ms_per_call(lambda: ops.int4_blocks_mm(x, w.codes, w.d, w.m, n), 10)
    dense = ms_per_call(
        lambda: F.linear(x.to(DENSE), ops.int4_blocks_dequantize(w.codes, w.d, w.m, n, DENSE)), 10
    )
    return kernel, dense


print(f"one decode step's matmuls: {LAYERS} x 4 linears ({step_bytes / 1e6:.1f} MB) + the int8 head")
print(f"({head_bytes / 1e6:.1f} MB)")
print(f"{'batch':>6}{'linears ms':>12}{'head ms':>9}{'GB/s at batch 1':>17}")
for batch in (1, 4, 16):
    x = {k: torch.randn(batch, k) for k in (576, 1536)}
    linears = ms_per_call(lambda x=x: step_linears(x), 10)
    lm_head = ms_per_call(lambda x=x: ops.int8_blocks_mm(x[576], head.codes, head.d, VOCAB), 10)
    rate = f"{(step_bytes + head_bytes) / (linears + lm_head) / 1e6:.1f}" if batch == 1 else ""
    print(f"{batch:>6}{linears:>12.2f}{lm_head:>9.2f}{rate:>17}")

print(f"\n{'matrix':>10}{'rows':>6}{'4-bit kernel':>14}{'dequant+GEMM':>14}  ({DENSE})")
for i in (2, 3):  # gate_up and down
    n, k = SHAPES[i]
    for rows in (16, 64, 128, 256, 512, 2048):
        kernel, dense = kernel_and_dense(layers[0][i], torch.randn(rows, k))
        print(f"{n:>5}x{k:<4}{rows:>6}{kernel:>14.3f}{dense:>14.3f}")
