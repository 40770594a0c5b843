"""Sampling on the device: penalties, logit bias, temperature, top-k/top-p/min-p, seeds, logprobs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pyinfer.kernels import triton_enabled


@dataclass
class SamplingTensors:
    """Per-row sampling state for one step (the engine builds it: engine/sampling_tensors.py). Optional
    parts are None when unused."""

    all_greedy: bool
    temperature: torch.Tensor | None = None  # [B] float; 1.0 on greedy rows
    greedy: torch.Tensor | None = None  # [B] bool
    top_k: torch.Tensor | None = None  # [B] long; vocab size where off
    top_p: torch.Tensor | None = None  # [B] float
    min_p: torch.Tensor | None = None  # [B] float
    # penalties: token ids of prompt and output, padded with vocab_size
    prompt_ids: torch.Tensor | None = None  # [B, P]
    output_ids: torch.Tensor | None = None  # [B, O]
    repetition_penalty: torch.Tensor | None = None  # [B, 1]
    presence_penalty: torch.Tensor | None = None  # [B, 1]
    frequency_penalty: torch.Tensor | None = None  # [B, 1]
    bias_rows: torch.Tensor | None = None  # logit bias as (row, token, value) triples
    bias_tokens: torch.Tensor | None = None
    bias_values: torch.Tensor | None = None
    banned_rows: torch.Tensor | None = None  # stop tokens masked while below min_tokens: (row, token) pairs
    banned_tokens: torch.Tensor | None = None
    token_bitmask: torch.Tensor | None = None  # [B, ceil(V / 32)] int32: allowed tokens (structured output)
    generators: list[torch.Generator | None] | None = None  # per-row seeded generators
    max_logprobs: int = -1  # -1: no row wants logprobs

    @property
    def is_plain(self) -> bool:
        """No logit processing before sampling."""
        return (
            self.bias_rows is None
            and self.repetition_penalty is None
            and self.banned_rows is None
            and self.token_bitmask is None
        )


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor  # [B] long
    logprobs: torch.Tensor | None = None  # [B] chosen token's logprob
    top_ids: torch.Tensor | None = None  # [B, k]
    top_logprobs: torch.Tensor | None = None  # [B, k]


class Sampler(nn.Module):
    def forward(
        self, logits: torch.Tensor, st: SamplingTensors, argmax: torch.Tensor | None = None
    ) -> SamplerOutput:
        """argmax: the logits' row-wise argmax where already computed (by a CUDA graph)."""
        if st.all_greedy and st.max_logprobs < 0 and st.is_plain:
            return SamplerOutput(token_ids=argmax if argmax is not None else logits.argmax(dim=-1))
        logits = logits.float()
        vocab = logits.shape[-1]
        if st.bias_rows is not None:
            logits.index_put_((st.bias_rows, st.bias_tokens), st.bias_values, accumulate=True)
        if st.repetition_penalty is not None:
            logits = _apply_penalties(logits, st, vocab)
        if st.token_bitmask is not None:
            apply_token_bitmask(logits, st.token_bitmask)
        if st.banned_rows is not None:
            _ban_stop_tokens(logits, st)

        token_ids = logits.argmax(dim=-1) if st.all_greedy else self._sample(logits, st)

        out = SamplerOutput(token_ids=token_ids)
        if st.max_logprobs >= 0:
            logprobs = logits.log_softmax(dim=-1)
            out.logprobs = logprobs.gather(-1, token_ids[:, None]).squeeze(-1)
            if st.max_logprobs > 0:
                out.top_logprobs, out.top_ids = logprobs.topk(st.max_logprobs, dim=-1)
        return out

    @staticmethod
    def _sample(logits: torch.Tensor, st: SamplingTensors) -> torch.Tensor:
        greedy = logits.argmax(dim=-1)
        scaled = logits / st.temperature[:, None]
        if st.top_k is not None or st.top_p is not None:
            scaled = _top_k_top_p(scaled, st.top_k, st.top_p)
        probs = scaled.softmax(dim=-1)
        if st.min_p is not None:
            probs = probs.masked_fill(probs < st.min_p[:, None] * probs.amax(dim=-1, keepdim=True), 0.0)
        draw = _race if probs.is_cuda else _inverse_cdf
        return torch.where(st.greedy, greedy, draw(probs, st.generators))


def _ban_stop_tokens(logits: torch.Tensor, st: SamplingTensors) -> None:
    """Stop tokens to -inf in the rows below their min_tokens; except in a row whose grammar allows only a
    stop token (its reply is complete): the grammar wins, the reply ends. Without a host sync."""
    if st.token_bitmask is None:
        logits[st.banned_rows, st.banned_tokens] = -float("inf")
        return
    kept = logits[st.banned_rows, st.banned_tokens]
    logits[st.banned_rows, st.banned_tokens] = -float("inf")
    emptied = logits.isneginf().all(dim=-1)[st.banned_rows]
    logits[st.banned_rows, st.banned_tokens] = torch.where(emptied, kept, -float("inf"))


def _race(probs: torch.Tensor, generators: list[torch.Generator | None] | None) -> torch.Tensor:
    """A token per row of probs: argmax(p / E) with E ~ Exp(1) over the whole vocabulary, one parallel
    pass with no sort or host sync (the GPU's way). Seeded rows draw their own E."""
    noise = torch.empty_like(probs).exponential_()
    for row, gen in enumerate(generators or ()):
        if gen is not None:
            noise[row].exponential_(generator=gen)
    return (probs / noise).argmax(dim=-1)


def _inverse_cdf(probs: torch.Tensor, generators: list[torch.Generator | None] | None) -> torch.Tensor:
    """A token per row of probs: where one uniform draw falls in the row's running sum (the CPU's way: one
    random number a row, where the race draws one per token, which costs a CPU more than the step's whole
    LM head). Seeded rows draw their own. The sum runs in float64, so that a long vocabulary's small
    probabilities keep their intervals; a token of zero probability spans none: never drawn. A row with
    nothing to draw (every token masked) takes its argmax, as the race would."""
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64)
    for row, gen in enumerate(generators or ()):
        if gen is not None:
            u[row] = torch.rand(1, generator=gen, dtype=torch.float64)
    drawn = torch.searchsorted(cdf, u * total, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)
    drawable = (total.squeeze(-1) > 0) & total.squeeze(-1).isfinite()
    return torch.where(drawable, drawn, probs.argmax(dim=-1))


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place: logits [B, V] (fp32) to -inf where bitmask [B, ceil(V / 32)] int32 has the token's bit
    clear. One Triton kernel on the GPU; on the CPU, the bits unpacked by torch (the kernel's reference)."""
    if triton_enabled(logits):
        from pyinfer.kernels.token_bitmask import apply_token_bitmask as kernel

        kernel(logits, bitmask)
        return
    rows, vocab = logits.shape
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = ((bitmask[:, :, None] >> shifts) & 1).view(rows, -1)[:, :vocab].bool()
    logits.masked_fill_(~allowed, -float("inf"))


def _apply_penalties(logits: torch.Tensor, st: SamplingTensors, vocab: int) -> torch.Tensor:
    rows = logits.shape[0]
    counts = torch.zeros(rows, vocab + 1, device=logits.device)
    counts.scatter_add_(1, st.output_ids, torch.ones_like(st.output_ids, dtype=counts.dtype))
    counts = counts[:, :vocab]
    seen = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, st.prompt_ids, True)
    seen = seen[:, :vocab] | (counts > 0)
    # repetition penalty (multiplicative, on prompt and output tokens), as in Hugging Face / vLLM
    penalized = torch.where(logits > 0, logits / st.repetition_penalty, logits * st.repetition_penalty)
    logits = torch.where(seen, penalized, logits)
    # presence and frequency penalties (additive, on output tokens), as in OpenAI's API
    return logits - st.frequency_penalty * counts - st.presence_penalty * (counts > 0)


def _top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    if top_k is not None:
        ranks = torch.arange(logits.shape[-1], device=logits.device)
        sorted_logits = sorted_logits.masked_fill(ranks[None, :] >= top_k[:, None], -float("inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p[:, None], -float("inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device, through pinned memory on a GPU: a copy from pageable memory would
    first wait for every kernel queued before it, and so for the step it is meant to overlap."""
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host.to(device)
