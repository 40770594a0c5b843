"""The sampler's per-row tensors of one step, built from the batch's sequences and their parameters."""

from __future__ import annotations

import torch

from pyinfer.engine.sequence import Sequence
from pyinfer.layers.sampler import SamplingTensors, upload


def build_sampling_tensors(
    seqs: list[Sequence], vocab: int, eos_token_ids: list[int], device: torch.device
) -> SamplingTensors:
    params = [s.params for s in seqs]
    greedy = [p.greedy for p in params]
    st = SamplingTensors(
        all_greedy=all(greedy),
        max_logprobs=max((p.logprobs for p in params if p.logprobs is not None), default=-1),
    )
    if not st.all_greedy:
        st.temperature = _to_device(
            [1.0 if g else p.temperature for p, g in zip(params, greedy, strict=True)], device
        )
        st.greedy = _to_device(greedy, device)
        if any(p.top_k > 0 for p in params):
            st.top_k = _to_device([p.top_k if p.top_k > 0 else vocab for p in params], device)
        if any(p.top_p < 1 for p in params):
            st.top_p = _to_device([p.top_p for p in params], device)
        if any(p.min_p > 0 for p in params):
            st.min_p = _to_device([p.min_p for p in params], device)
        if any(s.generator is not None for s in seqs):
            st.generators = [s.generator for s in seqs]
    if any(p.has_penalties for p in params):
        st.prompt_ids = _padded([s.token_ids[: s.num_prompt_tokens] for s in seqs], vocab, device)
        st.output_ids = _padded([s.output_token_ids for s in seqs], vocab, device)
        st.repetition_penalty = _to_device([[p.repetition_penalty] for p in params], device)
        st.presence_penalty = _to_device([[p.presence_penalty] for p in params], device)
        st.frequency_penalty = _to_device([[p.frequency_penalty] for p in params], device)
    bias = [(r, t, b) for r, p in enumerate(params) for t, b in (p.logit_bias or {}).items()]
    if bias:
        rows, tokens, values = zip(*bias, strict=True)
        st.bias_rows = _to_device(rows, device)
        st.bias_tokens = _to_device(tokens, device)
        st.bias_values = _to_device(values, device, torch.float32)
    banned = [
        (r, t)
        for r, s in enumerate(seqs)
        if s.num_output_tokens < s.params.min_tokens
        for t in {*eos_token_ids, *s.params.stop_token_ids}
    ]
    if banned:
        rows, tokens = zip(*banned, strict=True)
        st.banned_rows = _to_device(rows, device)
        st.banned_tokens = _to_device(tokens, device)
    return st


def _padded(rows: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    return _to_device([r + [pad] * (width - len(r)) for r in rows], device, torch.long)


def _to_device(values: list, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    return upload(torch.tensor(values, dtype=dtype), device)
