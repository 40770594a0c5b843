"""What the CPU's quantized matmuls should compute, in plain torch: the references the kernel and layer
tests hold them to."""

from __future__ import annotations

import torch

from pyinfer.layers.quantization import GROUP_SIZE, Int4Blocks, Int4Shard, Int8Blocks, Int8Weights


def int4_dense(shard: Int4Shard) -> torch.Tensor:
    expand = lambda t: t.repeat_interleave(GROUP_SIZE, dim=1)  # noqa: E731
    return (shard.q.float() - 8) * expand(shard.scale) + expand(shard.zero)


def blocks_dense(blocks: Int4Blocks) -> torch.Tensor:
    """The fp32 matrix of 4-bit blocks, unpacked in torch from their panels (steps 0-3 of a group in the
    low nibbles, 4-7 in the high ones)."""
    runs = blocks.codes.reshape(*blocks.codes.shape[:2], 4, 16, 4)
    codes = unpanel_steps(torch.cat([runs & 15, runs >> 4], dim=2), blocks.out_features).float()
    expand = lambda t: unpanel_scales(t, blocks.out_features).float().repeat_interleave(GROUP_SIZE, dim=1)  # noqa: E731
    return codes * expand(blocks.d) + expand(blocks.m)


def int8_codes(w: Int8Blocks) -> torch.Tensor:
    """The [N, K] int8 codes of int8 blocks, from their panels (each held as q + 128)."""
    steps = w.codes.reshape(*w.codes.shape[:2], 8, 16, 4)
    return (unpanel_steps(steps, w.out_features).to(torch.int16) - 128).to(torch.int8)


def int8_dense(w: Int8Weights) -> torch.Tensor:
    """Per-channel scales [N], or blocks with a scale per group of 32 inputs."""
    if isinstance(w, Int8Blocks):
        return int8_codes(w).float() * unpanel_scales(w.d, w.out_features).float().repeat_interleave(
            GROUP_SIZE, dim=1
        )
    return w.q.float() * w.scale.float()[:, None]


def unpanel_steps(steps: torch.Tensor, n: int) -> torch.Tensor:
    """[N / 16, K / 32, 8, 16, 4] steps back to the [N, K] rows they hold."""
    panels, groups = steps.shape[:2]
    return steps.permute(0, 3, 1, 2, 4).reshape(panels * 16, groups * GROUP_SIZE)[:n]


def unpanel_scales(scale: torch.Tensor, n: int) -> torch.Tensor:
    """[N / 16, K / 32, 16] scales back to [N, K / 32]."""
    return scale.transpose(1, 2).reshape(-1, scale.shape[1])[:n]


def int8_activations(x: torch.Tensor) -> torch.Tensor:
    """x as our integer kernels see it: rounded per group of 32 to int8 steps of max|x| / 127."""
    groups = x.float().reshape(*x.shape[:-1], -1, GROUP_SIZE)
    top = groups.abs().amax(-1, keepdim=True)
    # 127 / top divided as the kernel divides (torch's scalar / tensor multiplies by a reciprocal, an ulp off)
    inv = torch.where(top > 0, torch.full_like(top, 127.0) / top, torch.zeros_like(top))
    return (torch.round(groups * inv) * (top / 127)).reshape(x.shape)


def kernel_product(x: torch.Tensor, weights, dense: torch.Tensor) -> torch.Tensor:
    """x @ dense^T as the kernel behind `weights` computes it: in float for torch's kernels; for ours,
    with x rounded to int8 against the codes, and the 4-bit blocks' minimum times x's exact group sums
    (their d and m in fp16, so the blocks' own matrix stands in for `dense`)."""
    if isinstance(weights, Int4Blocks):
        minimum = unpanel_scales(weights.m, weights.out_features).float().repeat_interleave(GROUP_SIZE, dim=1)
        return int8_activations(x) @ (blocks_dense(weights) - minimum).T + x.float() @ minimum.T
    return (int8_activations(x) if isinstance(weights, Int8Blocks) else x.float()) @ dense.T
