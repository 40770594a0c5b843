"""Continuous batching: each step, decodes first, then prefill chunks, within a token budget.

When KV blocks run out, the most recently admitted sequence is preempted: its blocks are freed
and it goes back to the front of the queue, to be recomputed (cheaply, via the prefix cache).

Under the priority policy the queue is kept in order of (priority, arrival), the least urgent running
sequence is the one preempted for space, and a waiting sequence more urgent than a running one that
finds no room (a full batch, or too few free blocks for its first chunk) preempts it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from pyinfer.engine.block_manager import BlockManager
from pyinfer.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """The batch of one step: sequences with one new token (decodes) come first."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    num_decodes: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(n)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        policy: str = "fcfs",
    ):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.by_priority = policy == "priority"
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self._enqueue(seq, front=False)

    def _enqueue(self, seq: Sequence, front: bool) -> None:
        """Into the waiting queue: at its end or front (fcfs), or in its place by urgency (priority)."""
        if self.by_priority:
            at = next((i for i, s in enumerate(self.waiting) if s.urgency > seq.urgency), len(self.waiting))
            self.waiting.insert(at, seq)
        elif front:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        if self.by_priority:
            self._make_room_for_the_most_urgent()
        # Running sequences by priority: one-token steps (decodes) before prefill chunks, each in admission order.
        # A sequence whose in-flight token reaches its length limit is finishing: nothing more to run.
        queue = deque(s for s in self.running if s.num_uncomputed_tokens == 1 and s.num_tokens < s.max_len)
        queue.extend(s for s in self.running if s.num_uncomputed_tokens > 1)
        while queue and budget > 0:
            seq = queue.popleft()
            n = min(seq.num_uncomputed_tokens, budget)
            while not self.block_manager.ensure_capacity(seq, seq.num_computed_tokens + n):
                victim = self._victim(queue, seq)
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                out.add(seq, n)
                budget -= n
        self.running = [s for s in self.running if s.status is SequenceStatus.RUNNING]
        # Admit waiting sequences while there is room.
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not seq.block_table:
                self.block_manager.allocate_prefix(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            if not self.block_manager.ensure_capacity(seq, seq.num_computed_tokens + n):
                self.block_manager.free_seq(seq)  # do not hold prefix blocks while waiting
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.perf_counter()
            self.running.append(seq)
            out.add(seq, n)
            budget -= n
        # Order the batch decodes first, as attention metadata expects.
        order = sorted(range(len(out.seqs)), key=lambda i: out.num_new_tokens[i] != 1)
        out.seqs = [out.seqs[i] for i in order]
        out.num_new_tokens = [out.num_new_tokens[i] for i in order]
        out.num_decodes = sum(1 for n in out.num_new_tokens if n == 1)
        return out

    def past_bounds(self, max_requests: int | None, max_tokens: int | None) -> list[Sequence]:
        """Requests that have not started (their first choice never scheduled), the least urgent first
        (under fcfs the latest), that would have to leave the queue for at most `max_requests` of them to
        wait, and at most `max_tokens` of their prompt tokens (a lone one stays whatever its length).
        Those not sheddable count, and stay."""
        fresh = [s for s in self.waiting if s.index == 0 and s.first_scheduled_time is None]
        count, tokens = len(fresh), sum(s.num_prompt_tokens for s in fresh)
        candidates = sorted((s for s in fresh if s.sheddable), key=lambda s: s.urgency)
        past = []
        while (
            candidates
            and count > 1
            and (
                (max_requests is not None and count > max_requests)
                or (max_tokens is not None and tokens > max_tokens)
            )
        ):
            past.append(victim := candidates.pop())
            count, tokens = count - 1, tokens - victim.num_prompt_tokens
        return past

    def _victim(self, queue: deque[Sequence], seq: Sequence) -> Sequence:
        """Who gives up its blocks so that `seq` can run: the most recently admitted (fcfs), or the least
        urgent (priority) of those still to schedule this step; `seq` itself where none is left."""
        if not queue:
            return seq
        if not self.by_priority:
            return queue.pop()
        victim = max(queue, key=lambda s: s.urgency)
        if victim.urgency < seq.urgency:
            return seq
        queue.remove(victim)
        return victim

    def _make_room_for_the_most_urgent(self) -> None:
        """Preempt running sequences less urgent than the first waiting one while it finds no room."""
        while self.waiting and self.running:
            first = self.waiting[0]
            worst = max(self.running, key=lambda s: s.urgency)
            if worst.urgency < first.urgency:
                return
            needed = -(
                -min(first.num_uncomputed_tokens, self.max_num_batched_tokens)
                // self.block_manager.block_size
            )
            if len(self.running) < self.max_num_seqs and self.block_manager.num_free_blocks >= needed:
                return
            self.running.remove(worst)
            self._preempt(worst)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(seq, front=True)

    def release_siblings(self, seq: Sequence) -> None:
        """Choices 1..n-1 enter the queue first once choice 0's prompt is cached, to share its blocks."""
        for sibling in reversed(seq.siblings):
            self._enqueue(sibling, front=True)
        seq.siblings = []

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.block_manager.free_seq(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:  # preempted while its last token was in flight
            self.waiting.remove(seq)

    def abort(self, request_id: str, index: int | None = None) -> list[Sequence]:
        """Remove a request's sequences (or only choice `index`) and free their blocks; returns those removed."""
        live = [s for s in (*self.running, *self.waiting) if s.request_id == request_id]
        parked = [sib for s in live for sib in s.siblings]
        found = [s for s in live + parked if index is None or s.index == index]
        for seq in found:
            for parent in live:
                if seq in parent.siblings:
                    parent.siblings.remove(seq)
            if index is not None and seq.siblings:
                self.release_siblings(seq)
            seq.siblings = []
            self.finish(seq, "abort")
        return found
