"""Tokens still in flight (overlapped scheduling) patched into a step's uploaded inputs."""

from __future__ import annotations

import torch

from pyinfer.engine.model_runner import patch_in_flight
from pyinfer.engine.step_plan import PLACEHOLDER


def test_every_row_in_flight_is_gathered_into_the_upload_view():
    upload = torch.tensor([PLACEHOLDER] * 3 + [7, 8, 9])  # ids, then the positions that follow them
    sampled = torch.tensor([40, 41, 42, 43])  # the previous step's ids; its rows 2, 0, 3 are ours
    patch_in_flight(upload[:3], torch.tensor([0, 1, 2]), sampled, torch.tensor([2, 0, 3]))
    assert upload.tolist() == [42, 40, 43, 7, 8, 9]


def test_some_rows_in_flight_leave_the_others():
    ids = torch.tensor([5, PLACEHOLDER, 6, 6, PLACEHOLDER])  # a prefill chunk beside two decodes
    patch_in_flight(ids, torch.tensor([1, 4]), torch.tensor([40, 41]), torch.tensor([1, 0]))
    assert ids.tolist() == [5, 41, 6, 6, 40]
