"""Incremental detokenization with stop strings, safe for streaming.

Text is released only when it is final: not ending in a partial UTF-8 character and not possibly
the start of a stop string that the next token could complete.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from pyinfer.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: list[str] | None = None,
        include_stop_str: bool = False,
        skip_special_tokens: bool = True,
    ):
        self.tokenizer = tokenizer
        self.stop = stop or []
        self.include_stop_str = include_stop_str
        self.skip_special_tokens = skip_special_tokens
        self.hold = max((len(s) for s in self.stop), default=1) - 1  # chars that may begin a stop string
        self.token_ids: list[int] = []
        self.starts: list[int] = []  # where each token's text starts in self.text
        self.text = ""
        self.emitted = 0  # characters of self.text already released
        self.prefix_offset = 0
        self.read_offset = 0
        self.stopped_by: str | None = None  # the stop string that ended the text
        self.finished = False

    def add(self, token_ids: list[int], finished: bool = False) -> str:
        """Feed new tokens; returns the text delta that is now final."""
        if self.stopped_by is None:
            for token in token_ids:
                self.token_ids.append(token)
                self.starts.append(len(self.text))
                self._decode_next()
                if self._find_stop():
                    break
            if finished and self.stopped_by is None:
                self._flush()
        self.finished = self.finished or finished
        end = (
            len(self.text)
            if finished or self.stopped_by is not None
            else max(self.emitted, len(self.text) - self.hold)
        )
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta

    @property
    def final_tokens(self) -> int:
        """How many of the tokens are settled in the reply: their text all released (or the reply over),
        and beginning before the cut where a stop string ended it (those after it are not the reply's)."""
        if self.stopped_by is not None:
            return bisect_left(self.starts, len(self.text))
        if self.finished:
            return len(self.starts)
        # a token's text ends where the next one's starts; the last one's where the text does. Tokens from
        # read_offset on are not in the text yet (they end in part of a character).
        settled = max(bisect_right(self.starts, self.emitted, 1) - 1, 0)
        settled += settled == len(self.starts) - 1 and len(self.text) <= self.emitted
        return min(settled, self.read_offset)

    def _decode_next(self) -> None:
        skip = self.skip_special_tokens
        prefix = self.tokenizer.decode(self.token_ids[self.prefix_offset : self.read_offset], skip)
        full = self.tokenizer.decode(self.token_ids[self.prefix_offset :], skip)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.token_ids)

    def _flush(self) -> None:
        """At the end, release what was held back as a possibly incomplete character."""
        skip = self.skip_special_tokens
        prefix = self.tokenizer.decode(self.token_ids[self.prefix_offset : self.read_offset], skip)
        full = self.tokenizer.decode(self.token_ids[self.prefix_offset :], skip)
        self.text += full[len(prefix) :]
        self.prefix_offset = self.read_offset = len(self.token_ids)
        self._find_stop()

    def _find_stop(self) -> bool:
        if not self.stop:
            return False
        start = max(0, self.emitted - self.hold)
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if not hits:
            return False
        pos, stop = min(hits)
        self.text = self.text[: pos + len(stop) if self.include_stop_str else pos]
        self.stopped_by = stop
        return True
