"""Weight-only quantized matrices for the CPU: int4 in groups of 32 inputs, int8 per output channel.

They run on torch's CPU kernels where those have a fast path (AVX-512), and on our C++ integer kernels
(pyinfer/csrc/integer_matmul.cpp: activations quantized to int8 per group of 32, as llama.cpp does) where they
do not: on an AVX2-only EPYC torch's int4 kernel took 1.13 ms a call and its int8 one 23 ms for
SmolLM2's head (bench/results/2026-11-30-cpu-avx2.md). One small interface: `mm(x)` (x @ W^T in x's
dtype), `out_features` and a short `description` for the start-up log.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pyinfer.kernels.cpu import cpu_has_bf16, cpu_ops, integer_kernels_choice

GROUP_SIZE = 32
PANEL = 16  # weight rows per panel, our integer kernels' layout (pyinfer/csrc/blocks.h)
# From this many rows (a prefill chunk) a dense GEMM on the unpacked weight beats the int4 kernel,
# 1.3-2.7x at 96-512 rows on SmolLM2's matrices (int4 kernel vs unpack + bf16 GEMM, 2 cores).
DENSE_MIN_ROWS = 96
# The same crossover for our integer kernel against dequantize + fp32 GEMM lies between 64 and 128 rows
# (`python bench/cpu/integer_kernels.py`, AVX2, 2 cores, ms, one run): gate_up 3.6 vs 4.1 at 64 rows,
# 7.2 vs 6.0 at 128; down 1.6 vs 1.6 at 64, 3.4 vs 2.5 at 128.
BLOCKS_DENSE_MIN_ROWS = 64


def integer_kernels_wanted() -> bool:
    """Whether quantized matmuls (and the fused decode layer) run on our C++ integer kernels: wherever
    they are built, where torch dispatches its CPU kernels to AVX2 (their slow path); where torch has
    fast int4 kernels too (AVX-512), unless torch's measured faster end to end on this processor."""
    if cpu_ops() is None:
        return False
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        return True
    return integer_kernels_choice() is not False


class Int4Shard(NamedTuple):
    """A block-quantized matrix as stored: w = (q - 8) * scale + zero, per group of 32 inputs."""

    q: torch.Tensor  # [N, K] uint8 in 0..15
    scale: torch.Tensor  # [N, K / 32] float32
    zero: torch.Tensor  # [N, K / 32] float32


class QuantizedWeights:
    """A weight-only quantized [out_features, in_features] matrix; subclasses supply the 2-D product."""

    out_features: int
    description: str

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        out = self._mm(x.reshape(-1, x.shape[-1]))
        return out.reshape(*x.shape[:-1], self.out_features)

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Int4Weights(QuantizedWeights):
    """int4 weights in groups of 32, in the form one kernel reads (int4_weights picks it)."""

    description = f"int4 g{GROUP_SIZE}"


class TorchInt4Weights(Int4Weights):
    """Packed int4 weights and their per-group scales and zeros, ready for torch's CPU kernel."""

    def __init__(self, shard: Int4Shard, dtype: torch.dtype):
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(shard.q.to(torch.int32), 1)
        # [K / 32, N, 2] in the activations' dtype, as the kernel wants
        self.scales_and_zeros = torch.stack([shard.scale.T, shard.zero.T], dim=-1).to(dtype).contiguous()
        self.out_features = shard.q.shape[0]

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        dense = x.shape[0] >= DENSE_MIN_ROWS and self.out_features % 64 == 0
        if dense and (ops := cpu_ops()) is not None and int4_unpack_matches_torch():
            return F.linear(x, ops.int4_unpack(self.packed, self.scales_and_zeros, GROUP_SIZE))
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP_SIZE, self.scales_and_zeros)


class Int4Blocks(Int4Weights):
    """int4 weights as 4-bit blocks for our integer kernel: w = code * d + m per group of 32 inputs, d and m
    in fp16 (GGUF's Q4_1: exact for the file's blocks; 5 bits a weight, the bytes a decode step reads),
    in panels of 16 rows (pyinfer/csrc/blocks.h): codes [N / 16, K / 32, 256], d and m [N / 16, K / 32, 16]."""

    def __init__(self, shard: Int4Shard):
        steps = panel_steps(shard.q)  # [P, G, 8, 16, 4]; steps 0-3 in the low nibbles, 4-7 in the high
        self.codes = (steps[:, :, :4] | (steps[:, :, 4:] << 4)).reshape(*steps.shape[:2], -1).contiguous()
        self.d = panel_scales(shard.scale.half())
        self.m = panel_scales((shard.zero.float() - 8 * shard.scale.float()).half())
        self.out_features = shard.q.shape[0]

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        ops = cpu_ops()
        if x.shape[0] >= BLOCKS_DENSE_MIN_ROWS:  # a GEMM on the dequantized weight, bf16 where it is native
            dtype = torch.bfloat16 if cpu_has_bf16() else torch.float32
            dense = ops.int4_blocks_dequantize(self.codes, self.d, self.m, self.out_features, dtype)
            return F.linear(x.to(dtype), dense).to(x.dtype)
        return ops.int4_blocks_mm(x, self.codes, self.d, self.m, self.out_features)


def panel_steps(q: torch.Tensor) -> torch.Tensor:
    """[N, K] codes in our kernels' panels: [N / 16, K / 32, 8 steps, 16 rows, 4 inputs] (rows past N zero)."""
    panels = _panels(q)
    return panels.reshape(panels.shape[0], PANEL, -1, 8, 4).permute(0, 2, 3, 1, 4)


def panel_scales(scale: torch.Tensor) -> torch.Tensor:
    """[N, K / 32] per-group scales in our kernels' panels: [N / 16, K / 32, 16]."""
    return _panels(scale).transpose(1, 2).contiguous()


def _panels(t: torch.Tensor) -> torch.Tensor:
    """[N, ...] as [ceil(N / 16), 16, ...], the rows past N zero."""
    if pad := -t.shape[0] % PANEL:
        t = torch.cat([t, t.new_zeros(pad, *t.shape[1:])])
    return t.reshape(-1, PANEL, *t.shape[1:])


def int4_weights(shard: Int4Shard, dtype: torch.dtype) -> Int4Weights:
    """The int4 weights in the form this machine's fastest kernel reads."""
    return Int4Blocks(shard) if integer_kernels_wanted() else TorchInt4Weights(shard, dtype)


class Int8Weights(QuantizedWeights):
    """Symmetric int8 weights, w = q * scale, in the form one kernel reads (quantize_int8 picks it)."""


class TorchInt8Weights(Int8Weights):
    """One scale per output channel ([N], in the activations' dtype), for torch's kernel."""

    description = "int8 per-channel"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor):
        self.q = q  # [N, K] int8 in -127..127
        self.scale = scale
        self.out_features = q.shape[0]

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.q, self.scale)


class Int8Blocks(Int8Weights):
    """One fp16 scale per group of 32 inputs (GGUF's Q8_0: finer wherever a row's weights differ in size,
    for 6% more bytes), in our integer kernel's panels of 16 rows (pyinfer/csrc/blocks.h): codes
    [N / 16, K / 32, 512] as q + 128, d [N / 16, K / 32, 16]."""

    description = f"int8 g{GROUP_SIZE}"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor):
        steps = panel_steps((q.to(torch.int16) + 128).to(torch.uint8))
        self.codes = steps.reshape(*steps.shape[:2], -1).contiguous()
        self.d = panel_scales(scale)
        self.out_features = q.shape[0]

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_ops().int8_blocks_mm(x, self.codes, self.d, self.out_features)


@functools.cache
def int4_unpack_matches_torch() -> bool:
    """Whether the C++ unpack reads this torch build's int4 packing (its layout depends on the CPU
    capability torch dispatches to): pack a known matrix once and unpack it."""
    ops = cpu_ops()
    if ops is None:
        return False
    q = torch.randint(0, 16, (128, 64), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales_and_zeros = torch.stack([torch.ones(2, 128), torch.full((2, 128), 8.0)], dim=-1)
    return torch.equal(ops.int4_unpack(packed, scales_and_zeros, GROUP_SIZE), q.float())


def quantize(w: torch.Tensor, method: str) -> QuantizedWeights:
    """A dense [N, K] weight as int8 per-channel or int4 g32 weights; scales in w's dtype."""
    if method == "int8":
        return quantize_int8(w)
    if method == "int4":
        return int4_weights(quantize_int4(w), w.dtype)
    raise ValueError(f"quantization method must be int8 or int4, not {method!r}")


def quantize_int8(w: torch.Tensor) -> Int8Weights:
    """Scale = absmax / 127 per output channel, or per group of 32 inputs where our integer kernel will
    multiply (fp16 scales). The scale is rounded as the kernel holds it before q is computed from it,
    so that the kernel dequantizes with exactly the scale q was rounded against."""
    n, k = w.shape
    if integer_kernels_wanted() and k % GROUP_SIZE == 0:
        groups = w.float().reshape(n, k // GROUP_SIZE, GROUP_SIZE)
        scale = (groups.abs().amax(dim=-1) / 127).half()
        q = torch.round(groups / _nonzero(scale.float())[..., None]).clamp(-127, 127)
        return Int8Blocks(q.to(torch.int8).reshape(n, k), scale)
    scale = (w.float().abs().amax(dim=1) / 127).to(w.dtype)
    q = torch.round(w.float() / _nonzero(scale.float())[:, None]).clamp(-127, 127).to(torch.int8)
    return TorchInt8Weights(q, scale)


def quantize_int4(w: torch.Tensor) -> Int4Shard:
    """Asymmetric per group of 32 inputs: the group's [min, max] mapped onto q in 0..15.

    In the Int4Shard convention w = (q - 8) * scale + zero: scale = (max - min) / 15, zero = min + 8 scale.
    Scale and zero are rounded as the kernel will hold them before q is computed from them: to w's dtype
    for torch's kernel; for our integer kernel's blocks, scale and min to fp16 (Int4Blocks).
    """
    n, k = w.shape
    if k % GROUP_SIZE:
        raise ValueError(f"int4 needs the input size to be a multiple of {GROUP_SIZE}, not {k}")
    groups = w.float().reshape(n, k // GROUP_SIZE, GROUP_SIZE)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    if integer_kernels_wanted():
        scale = ((high - low) / 15).half().float()
        zero = low.half().float() + 8 * scale
    else:
        scale = ((high - low) / 15).to(w.dtype).float()
        zero = (low + 8 * scale).to(w.dtype).float()
    q = torch.round((groups - zero[..., None]) / _nonzero(scale)[..., None] + 8).clamp(0, 15)
    return Int4Shard(q.to(torch.uint8).reshape(n, k), scale, zero)


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    """Divisor for q: an all-zero row or constant group has scale 0 and any q reproduces it."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def empty_int4_shard(out_features: int, in_features: int) -> Int4Shard:
    """Staging buffers with a weight's layout, filled shard by shard by the linear's weight_loader."""
    groups = in_features // GROUP_SIZE
    return Int4Shard(
        torch.zeros(out_features, in_features, dtype=torch.uint8),
        torch.zeros(out_features, groups),
        torch.zeros(out_features, groups),
    )
