"""The greedy-sampling argmax kernel against torch.argmax, ties included."""

from __future__ import annotations

import pytest
import torch

from pyinfer.kernels.argmax import CHUNK, argmax


@pytest.mark.parametrize(("rows", "vocab"), [(1, 100), (3, 2 * CHUNK + 77), (2, 128256)])
def test_argmax_matches_torch(rows, vocab, device, dtype):
    x = torch.randn(rows, vocab).to(device, dtype)
    assert torch.equal(argmax(x).cpu(), x.argmax(-1).cpu())


def test_argmax_ties_go_to_the_lowest_index_across_chunks(device, dtype):
    x = torch.zeros(3, 3 * CHUNK).to(device, dtype)
    x[0, [CHUNK + 5, 5, 2 * CHUNK]] = 4.0  # the same maximum in three chunks
    x[1, [2 * CHUNK + 9, 2 * CHUNK + 3]] = 1.0  # twice in the last chunk
    x[2] = -1.0  # every entry ties
    assert argmax(x).tolist() == [5, 2 * CHUNK + 3, 0]


def test_argmax_reads_rows_of_a_strided_view(device, dtype):
    wide = torch.randn(4, 5000).to(device, dtype)
    rows = wide[::2, :4000]
    assert torch.equal(argmax(rows).cpu(), rows.argmax(-1).cpu())
