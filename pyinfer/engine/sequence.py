"""Sequence: one choice of one request, with its tokens, KV blocks and timings."""

from __future__ import annotations

import enum
import itertools
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyinfer.engine.messages import RequestMetrics
from pyinfer.sampling_params import SamplingParams

if TYPE_CHECKING:
    from pyinfer.engine.structured_output import GrammarRef

_arrivals = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(
        self,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: SamplingParams,
        max_len: int,
        generator: torch.Generator | None = None,
    ):
        self.request_id = request_id
        self.index = index
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.max_len = max_len  # prompt + output may not pass this
        self.generator = generator
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []  # grows by appends; freeing the blocks puts a new list here
        self._table_array: tuple[list[int], np.ndarray] | None = None  # (the list it holds, the array)
        self.block_hashes: list[int] = []  # hashes of this sequence's full blocks, in order
        self.num_computed_tokens = 0  # tokens whose KV is in the cache
        self.num_cached_tokens: int | None = None  # prompt tokens served from the prefix cache
        self.num_cache_written_tokens = 0  # prompt tokens this sequence made findable in the prefix cache
        self.finish_reason: str | None = None
        self.siblings: list[Sequence] = []  # choices 1..n-1, admitted once this one's prompt is in the cache
        self.num_preemptions = 0
        self.pending_row: int | None = None  # row of this sequence's token among the in-flight step's samples
        self.grammar: GrammarRef | None = None  # where its matcher is kept, once its constraint compiled
        self.arrival_time = time.perf_counter()
        self.arrival = next(_arrivals)  # ties between equal priorities: first come, first served
        self.first_scheduled_time: float | None = None
        self.sheddable = True  # a full queue may remove it before it starts (Scheduler.past_bounds)
        self.first_token_time: float | None = None

    @property
    def urgency(self) -> tuple[int, int]:
        """The priority policy's order: lower first."""
        return self.params.priority, self.arrival

    def block_table_array(self) -> np.ndarray:
        """The block table as int64, converted again only once it has grown or been replaced (every
        block_size tokens of a decode), not on each step."""
        table = self.block_table
        if (
            self._table_array is None
            or self._table_array[0] is not table
            or len(self._table_array[1]) != len(table)
        ):
            self._table_array = table, np.array(table, dtype=np.int64)
        return self._table_array[1]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def metrics(self, now: float) -> RequestMetrics:
        scheduled = self.first_scheduled_time or now
        first = self.first_token_time or now
        return RequestMetrics(
            queue_ms=(scheduled - self.arrival_time) * 1e3,
            prefill_ms=(first - scheduled) * 1e3,
            decode_ms=(now - first) * 1e3,
            time_to_first_token_ms=(first - self.arrival_time) * 1e3,
            decode_iterations=max(self.num_output_tokens - 1, 0),
            num_preemptions=self.num_preemptions,
        )
