"""The queued requests of every API process in front of one engine core, on a board they all map.

Each process writes its own figures (requests admitted and not yet answered, and their prompt tokens) as
they change, and reads the others' when it admits a request. The engine core hears of a request only once
its prompt is tokenized and sent, so figures it told would miss the requests still being tokenized in
another process: a burst arriving in all of them at once passed the queue's bound many times over.
"""

from __future__ import annotations

import mmap
from pathlib import Path

FIELDS = 2  # requests, prompt tokens
CELL = 8  # bytes: one int64, written whole


class QueueBoard:
    def __init__(self, path: str, slot: int):
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)  # shared: every process sees each write at once
        self._cells = memoryview(self._map).cast("q")
        self._slot = slot

    @staticmethod
    def create(path: str, slots: int) -> None:
        Path(path).write_bytes(bytes(CELL * FIELDS * slots))

    def publish(self, requests: int, tokens: int) -> None:
        at = FIELDS * self._slot
        self._cells[at] = requests
        self._cells[at + 1] = tokens

    def others(self) -> tuple[int, int]:
        """The other processes' queued requests and their prompt tokens."""
        cells = self._cells.tolist()
        at = FIELDS * self._slot
        return sum(cells[0::FIELDS]) - cells[at], sum(cells[1::FIELDS]) - cells[at + 1]
