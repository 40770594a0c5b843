"""Structured output's token-mask kernel against the sampler's PyTorch reference (bits unpacked by torch)."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.token_bitmask import apply_token_bitmask
from pyinfer.layers import sampler


@pytest.mark.parametrize(("rows", "vocab"), [(1, 32), (3, 1000), (5, 49152 + 17)])
def test_the_kernel_masks_what_the_reference_masks(device, rows, vocab, monkeypatch):
    words = -(-vocab // 32)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (rows, words), dtype=torch.int32)
    bitmask[-1, -1] = -1  # a whole word allowed, the sign bit included
    bitmask[0, 0] = 0b101  # tokens 0 and 2 only, in the first word
    logits = torch.randn(rows, vocab)
    monkeypatch.setattr(sampler, "triton_enabled", lambda x: False)
    expected = logits.clone()
    sampler.apply_token_bitmask(expected, bitmask)
    got = logits.clone().to(device)
    apply_token_bitmask(got, bitmask.to(device))
    torch.testing.assert_close(got.cpu(), expected)
    # the reference itself: token t allowed iff bit t % 32 of word t // 32 is set
    allowed = [(int(bitmask[r, t // 32]) >> (t % 32)) & 1 for r in range(rows) for t in range(vocab)]
    assert torch.equal(torch.isfinite(expected).flatten(), torch.tensor(allowed, dtype=torch.bool))
    assert torch.isfinite(expected[0, :3]).tolist() == [True, False, True]
