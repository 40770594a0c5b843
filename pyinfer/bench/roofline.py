"""Physical bounds for the benchmarks: measured peak bandwidth and matmul rate, bytes and FLOPs of a workload."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyinfer.models.model_config import ModelConfig


@dataclass
class Peaks:
    bandwidth: float  # bytes/s, counting bytes read plus written
    flops: float  # bf16 matmul FLOP/s

    def times(self, devices: int) -> Peaks:
        """The peaks of `devices` like this one, each working on its shard (the collectives not counted)."""
        return Peaks(self.bandwidth * devices, self.flops * devices)


def measure_peaks(device: torch.device) -> Peaks | None:
    """A large device-to-device copy and a large bf16 matmul, timed with events (CUDA only)."""
    if device.type != "cuda":
        return None
    src = torch.randn(2**28, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def timed(fn, reps: int = 10) -> float:
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / reps

    copy_s = timed(lambda: dst.copy_(src))
    mm_s = timed(lambda: a @ b)
    return Peaks(bandwidth=2 * src.numel() * 4 / copy_s, flops=2 * 8192**3 / mm_s)


@dataclass
class ModelCosts:
    weight_bytes: int  # read once per forward (embedding rows excluded unless tied to the head)
    kv_bytes_per_token: int
    linear_params: int  # per-token matmul parameters without the LM head
    head_params: int
    attn_flops_per_pair: int  # FLOPs for one (query, key) pair over all layers

    @classmethod
    def of(cls, cfg: ModelConfig, dtype: torch.dtype) -> ModelCosts:
        h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        per_layer = h * (q + 2 * kv) + q * h + 3 * h * i
        head = cfg.vocab_size * h
        size = dtype.itemsize
        return cls(
            weight_bytes=(layers * per_layer + head) * size,
            kv_bytes_per_token=2 * layers * kv * size,
            linear_params=layers * per_layer,
            head_params=head,
            attn_flops_per_pair=4 * layers * q,
        )

    def decode_step_bytes(self, contexts: list[int]) -> int:
        return self.weight_bytes + self.kv_bytes_per_token * sum(contexts)

    def prefill_flops(self, n: int) -> int:
        """One n-token prompt, causal, logits for the last token only."""
        return 2 * self.linear_params * n + self.attn_flops_per_pair * n * (n + 1) // 2 + 2 * self.head_params


def bound_line(name: str, measured: float, bound: float, unit: str, higher_is_better: bool = True) -> str:
    ratio = measured / bound if higher_is_better else bound / measured
    return f"{name:28}{measured:12.1f} {unit:8} bound {bound:10.1f} {unit:8} ({100 * ratio:.0f}% of bound)"
