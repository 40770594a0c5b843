"""The queued requests of every API process in front of one engine core, by priority, on a board they all map.

Each process writes its own figures (requests admitted and not yet answered, and their prompt tokens, for
each priority) as they change, and reads the others' when it admits a request. The engine core hears of a
request only once its prompt is tokenized and sent, so figures it told would miss the requests still being
tokenized in another process: a burst arriving in all of them at once passed the queue's bound many times
over. The figures are kept by priority because the bound counts only the requests that would run before
the one admitted: those at least as urgent as it (see QueueCounts.ahead_of).
"""

from __future__ import annotations

import mmap
from pathlib import Path

CELLS_PER_ROW = 3  # priority, requests, prompt tokens
ROWS = 32  # rows in a process's slot; the last holds every priority beyond the first ROWS - 1 at once
CELL = 8  # bytes: one int64, written whole


class QueueBoard:
    """A slot of ROWS rows for each process: one per priority it has queued requests of. A row's cells are
    written one at a time, so a reader may see one change half made (counted as more requests ahead of
    it, not fewer), as it may see it a moment late."""

    def __init__(self, path: str, slot: int):
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)  # shared: every process sees each write at once
        self._cells = memoryview(self._map).cast("q")
        self._start = slot * ROWS * CELLS_PER_ROW  # our slot's first cell
        self._rows: dict[int, int] = {}  # priority -> its row in our slot
        self._free = list(range(ROWS - 2, -1, -1))  # rows with no priority, the next to take on top

    @staticmethod
    def create(path: str, slots: int) -> None:
        Path(path).write_bytes(bytes(CELL * CELLS_PER_ROW * ROWS * slots))

    def publish(self, priority: int, counts: dict[int, list[int]]) -> None:
        """Post our figures for `priority`, from `counts` (priority -> [requests, prompt tokens], no zeros)."""
        row = self._rows.get(priority)
        if row is None:
            if priority not in counts:
                return
            row = self._rows[priority] = self._free.pop() if self._free else ROWS - 1
        elif priority not in counts:  # none left: the row is free again
            del self._rows[priority]
            if row != ROWS - 1:
                self._free.append(row)
        # the last row sums its priorities under the most urgent of them: counted before some requests
        # they do not precede, they may refuse one that a row each would have let in, never the reverse
        held = [p for p, r in self._rows.items() if r == row]
        at = self._start + row * CELLS_PER_ROW
        # Written in the order that leaves a reader between two writes counting too many requests ahead of
        # it, never too few: a more urgent label before the counts, a less urgent one after them.
        label = min(held, default=self._cells[at])
        if label < self._cells[at]:
            self._cells[at] = label
        self._cells[at + 1] = sum(counts[p][0] for p in held)
        self._cells[at + 2] = sum(counts[p][1] for p in held)
        self._cells[at] = label

    def others(self, priority: int) -> tuple[int, int]:
        """The other processes' queued requests at least as urgent as `priority`, and their prompt tokens."""
        cells = self._cells.tolist()
        del cells[self._start : self._start + ROWS * CELLS_PER_ROW]
        rows = zip(cells[0::CELLS_PER_ROW], cells[1::CELLS_PER_ROW], cells[2::CELLS_PER_ROW], strict=True)
        ahead = [(requests, tokens) for p, requests, tokens in rows if p <= priority]
        return sum(r for r, _ in ahead), sum(t for _, t in ahead)


class QueueCounts:
    """One API process's queued requests and their prompt tokens by priority (lower runs first), posted on
    the board where other processes share the engine core."""

    def __init__(self, board: QueueBoard | None):
        self._counts: dict[int, list[int]] = {}  # priority -> [requests, prompt tokens], none all zero
        self._board = board

    def add(self, priority: int, requests: int, tokens: int) -> None:
        counts = self._counts.setdefault(priority, [0, 0])
        counts[0] += requests
        counts[1] += tokens
        if counts == [0, 0]:
            del self._counts[priority]
        if self._board is not None:
            self._board.publish(priority, self._counts)

    def ahead_of(self, priority: int) -> tuple[int, int]:
        """The queued requests that a request of `priority` does not overtake (those at least as urgent),
        ours and the other processes', and their prompt tokens."""
        requests = tokens = 0
        for p, (n, k) in self._counts.items():
            if p <= priority:
                requests, tokens = requests + n, tokens + k
        if self._board is not None:
            n, k = self._board.others(priority)
            requests, tokens = requests + n, tokens + k
        return requests, tokens
