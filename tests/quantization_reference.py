"""What the CPU's quantized matmuls should compute, in plain torch: the references the kernel and layer
tests hold them to."""

from __future__ import annotations

import torch

from pyinfer.layers.quantization import GROUP_SIZE, Int4Blocks, Int4Shard, Int8Weights


def int4_dense(shard: Int4Shard) -> torch.Tensor:
    expand = lambda t: t.repeat_interleave(GROUP_SIZE, dim=1)  # noqa: E731
    return (shard.q.float() - 8) * expand(shard.scale) + expand(shard.zero)


def blocks_dense(blocks: Int4Blocks) -> torch.Tensor:
    """The fp32 matrix of 4-bit blocks, unpacked in torch: codes 0..15 of a group in the low nibbles."""
    n = blocks.codes.shape[0]
    groups = blocks.codes.reshape(n, -1, GROUP_SIZE // 2)
    codes = torch.cat([groups & 15, groups >> 4], dim=-1).reshape(n, -1).float()
    expand = lambda t: t.float().repeat_interleave(GROUP_SIZE, dim=1)  # noqa: E731
    return codes * expand(blocks.d) + expand(blocks.m)


def int8_dense(w: Int8Weights) -> torch.Tensor:
    """Per-channel scales [N], or per group of 32 inputs [N, K / 32]."""
    if w.scale.dim() == 2:
        return w.q.float() * w.scale.float().repeat_interleave(GROUP_SIZE, dim=1)
    return w.q.float() * w.scale.float()[:, None]


def int8_activations(x: torch.Tensor) -> torch.Tensor:
    """x as our integer kernels see it: rounded per group of 32 to int8 steps of max|x| / 127."""
    groups = x.float().reshape(*x.shape[:-1], -1, GROUP_SIZE)
    top = groups.abs().amax(-1, keepdim=True)
    inv = torch.where(top > 0, 127 / top, torch.zeros_like(top))
    return (torch.round(groups * inv) * (top / 127)).reshape(x.shape)


def kernel_product(x: torch.Tensor, weights, dense: torch.Tensor) -> torch.Tensor:
    """x @ dense^T as the kernel behind `weights` computes it: in float for torch's kernels; for ours,
    with x rounded to int8 against the codes, and the 4-bit blocks' minimum times x's exact group sums
    (their d and m in fp16, so the blocks' own matrix stands in for `dense`)."""
    if isinstance(weights, Int4Blocks):
        minimum = weights.m.float().repeat_interleave(GROUP_SIZE, dim=1)
        return int8_activations(x) @ (blocks_dense(weights) - minimum).T + x.float() @ minimum.T
    return (int8_activations(x) if getattr(weights, "integer_kernel", False) else x.float()) @ dense.T
