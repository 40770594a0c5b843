"""A step's plain data: block tables padded row by row, and a plan that survives its trip through the step
channel's encoding whole (the lists every rank builds its tensors from)."""

from __future__ import annotations

import numpy as np

from pyinfer.engine.scheduler import SchedulerOutput
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.step_plan import LISTS, StepPlan, block_tables, plan_step
from pyinfer.sampling_params import SamplingParams


def sequence(tokens: int, computed: int, blocks: list[int]) -> Sequence:
    seq = Sequence(f"r{tokens}-{computed}", 0, list(range(100, 100 + tokens)), SamplingParams(), 4096)
    seq.num_computed_tokens, seq.block_table = computed, blocks
    return seq


def test_block_tables_are_padded_with_block_zero_row_by_row():
    seqs = [sequence(1, 0, [7]), sequence(40, 39, [3, 9, 4]), sequence(20, 19, [5, 2])]
    assert block_tables(seqs).tolist() == [[7, 0, 0], [3, 9, 4], [5, 2, 0]]


def test_a_plan_decodes_to_itself_and_lists_what_the_step_runs():
    batch = SchedulerOutput()
    batch.add(sequence(40, 39, [3, 9, 4]), 1)  # a decode: position 39 is slot 4 * 16 + 7
    batch.add(sequence(20, 0, [5, 2]), 20)  # a whole prompt: slots in blocks 5 then 2
    batch.num_decodes = 1
    plan, sampling = plan_step(batch, block_size=16)
    assert sampling == batch.seqs and plan.num_samples == 2
    lists = dict(zip(LISTS, np.split(plan.values, np.cumsum(plan.sizes)[:-1]), strict=True))
    assert lists["positions"].tolist() == [39, *range(20)]
    assert lists["slots"].tolist() == [4 * 16 + 7, *range(5 * 16, 6 * 16), *range(2 * 16, 2 * 16 + 4)]
    assert lists["query_start"].tolist() == [0, 1, 21] and lists["token_rows"].tolist() == [0, 20]
    assert lists["tables"].tolist() == [3, 9, 4, 5, 2, 0]
    decoded = StepPlan.decode(plan.encode())
    assert np.array_equal(decoded.values, plan.values) and decoded.sizes == plan.sizes
    assert (decoded.num_decodes, decoded.width, decoded.seq_lens, decoded.query_lens) == (
        1,
        3,
        [40, 20],
        [1, 20],
    )
