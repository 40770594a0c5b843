"""A scheduled batch as the plain data every rank of a group builds its tensors from: lists of integers
end to end in one int64 array, sent as is to the other ranks of a tensor-parallel group."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pyinfer.engine.scheduler import SchedulerOutput
from pyinfer.engine.sequence import Sequence

PLACEHOLDER = -1  # a token sampled by a step still in flight


# the lists of a StepPlan, in order
LISTS = (
    "input_ids",
    "positions",
    "slots",
    "seq_lens",
    "query_start",
    "token_rows",
    "tables",
    "patch_rows",
    "patch_sources",
)
NUM_LISTS = len(LISTS)
TOKEN_ROWS = LISTS.index("token_rows")


@dataclass
class StepPlan:
    """One step's inputs as plain integers, all that every rank of a group builds its tensors from: the
    lists input ids, positions, KV slots, sequence lengths, query starts, rows of the sampled tokens,
    block tables (rows of `width`), and the rows whose token is in flight with their sources among the
    previous step's samples, end to end in `values` (int64), each `sizes` long."""

    values: np.ndarray
    sizes: list[int]
    num_decodes: int
    width: int
    seq_lens: list[int]  # host copies the attention backends read
    query_lens: list[int]

    @property
    def num_samples(self) -> int:
        return self.sizes[TOKEN_ROWS]

    def encode(self) -> np.ndarray:
        """As one int64 array, for the step channel."""
        header = np.array([self.num_decodes, self.width, *self.sizes], dtype=np.int64)
        return np.concatenate([header, self.values])

    @classmethod
    def decode(cls, data: np.ndarray) -> StepPlan:
        sizes = data[2 : 2 + NUM_LISTS].tolist()
        values = data[2 + NUM_LISTS :]
        lens = sum(sizes[:3])
        starts = values[lens + sizes[3] : lens + sizes[3] + sizes[4]]
        seq_lens = values[lens : lens + sizes[3]].tolist()
        return cls(values, sizes, int(data[0]), int(data[1]), seq_lens, np.diff(starts).tolist())


def plan_step(batch: SchedulerOutput, block_size: int) -> tuple[StepPlan, list[Sequence]]:
    """The batch's plan, and the sequences that sample a token in it (in row order)."""
    bs = block_size
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    seq_lens: list[int] = []
    token_rows: list[int] = []  # row of each sampling sequence's last token among the step's tokens
    sample_seqs: list[Sequence] = []
    patch_rows: list[int] = []
    patch_sources: list[int] = []
    decodes = batch.seqs[: batch.num_decodes]
    # One-token rows first (most of a busy step), without the ranges a chunk needs
    for row, seq in enumerate(decodes):
        p = seq.num_computed_tokens
        token = seq.token_ids[p]
        input_ids.append(token)
        if token == PLACEHOLDER:
            patch_rows.append(row)
            patch_sources.append(seq.pending_row)
        positions.append(p)
        slots.append(seq.block_table[p // bs] * bs + p % bs)
        seq_lens.append(p + 1)
        if p + 1 == seq.num_tokens:
            token_rows.append(row)
            sample_seqs.append(seq)
    chunks = zip(batch.seqs[len(decodes) :], batch.num_new_tokens[len(decodes) :], strict=True)
    for seq, n in chunks:
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        input_ids.extend(seq.token_ids[start:end])
        if input_ids[-1] == PLACEHOLDER:
            patch_rows.append(len(input_ids) - 1)
            patch_sources.append(seq.pending_row)
        positions.extend(range(start, end))
        table = seq.block_table
        # slot of position p: table[p // bs] * bs + p % bs, a block's run of positions at a time
        for b in range(start // bs, (end - 1) // bs + 1):
            offset = (table[b] - b) * bs
            slots.extend(range(offset + max(start, b * bs), offset + min(end, (b + 1) * bs)))
        seq_lens.append(end)
        if end == seq.num_tokens:
            token_rows.append(len(input_ids) - 1)
            sample_seqs.append(seq)
    query_start = [0]
    for n in batch.num_new_tokens:
        query_start.append(query_start[-1] + n)
    tables = block_tables(batch.seqs)
    before = (input_ids, positions, slots, seq_lens, query_start, token_rows)
    after = (patch_rows, patch_sources)
    sizes = [*map(len, before), tables.size, *map(len, after)]
    values = np.concatenate([_int64(before), tables.ravel(), _int64(after)])
    plan = StepPlan(values, sizes, batch.num_decodes, tables.shape[1], seq_lens, batch.num_new_tokens)
    return plan, sample_seqs


def block_tables(seqs: list[Sequence]) -> np.ndarray:
    """[len(seqs), longest table] int64: each sequence's block table, padded with block 0, from the
    arrays the sequences keep of their tables in one masked write."""
    if len(seqs) == 1:  # batch 1: no padding, and numpy's fixed costs below would be most of the work
        return seqs[0].block_table_array()[None].copy()  # the sequence's own array stays unwritten
    arrays = [s.block_table_array() for s in seqs]
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    tables = np.zeros((len(seqs), int(lengths.max())), dtype=np.int64)
    tables[np.arange(tables.shape[1]) < lengths[:, None]] = np.concatenate(arrays)  # row by row
    return tables


def _int64(lists: tuple[list[int], ...]) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=sum(map(len, lists)))
