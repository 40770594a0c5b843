"""A step's plain data: block tables padded row by row, and a plan that survives its trip through the step
channel's encoding whole (the lists every rank builds its tensors from)."""

from __future__ import annotations

import numpy as np

from pyinfer.engine.scheduler import SchedulerOutput
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.step_plan import LISTS, PLACEHOLDER, StepPlan, block_tables, plan_step
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


def test_block_tables_follow_a_table_that_grows_or_is_replaced_between_steps():
    grown, replaced = sequence(40, 39, [3, 9]), sequence(40, 39, [5, 2])
    assert block_tables([grown, replaced]).tolist() == [[3, 9], [5, 2]]
    grown.block_table.append(4)  # the block manager appends a block
    replaced.block_table = [6, 8]  # freed (preempted) and allocated again at the same length
    assert block_tables([grown, replaced]).tolist() == [[3, 9, 4], [6, 8, 0]]
    assert block_tables([replaced]).tolist() == [[6, 8]]


def test_a_one_token_prompt_chunk_among_the_decodes_samples_only_at_its_prompt_end():
    batch = SchedulerOutput()
    in_flight = sequence(40, 39, [3, 9, 4])
    in_flight.token_ids[-1], in_flight.pending_row = PLACEHOLDER, 5  # its token is still being sampled
    batch.add(in_flight, 1)
    batch.add(sequence(30, 20, [5, 2]), 1)  # one token of a prompt, ten still to come: no sample
    batch.num_decodes = 2
    plan, sampling = plan_step(batch, block_size=16)
    assert sampling == batch.seqs[:1]
    lists = dict(zip(LISTS, np.split(plan.values, np.cumsum(plan.sizes)[:-1]), strict=True))
    assert lists["input_ids"].tolist() == [PLACEHOLDER, 120]
    assert lists["patch_rows"].tolist() == [0] and lists["patch_sources"].tolist() == [5]
    assert lists["slots"].tolist() == [4 * 16 + 7, 2 * 16 + 4]
    assert lists["seq_lens"].tolist() == [40, 21] and lists["token_rows"].tolist() == [0]
