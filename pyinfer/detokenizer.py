"""Incremental detokenization with stop strings, safe for streaming.

Text is released only when it is final: not ending in a partial UTF-8 character and not possibly
the start of a stop string that the next token could complete.

Stop strings are sought in the reply's content only, as OpenAI's apply to the content and never to a
tool call: where the reply may hold call markup, no stop string is sought from its first trigger on
(nor in the whitespace before it, which is not content either), and the text is released as it comes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from pyinfer.tokenizer import Tokenizer

WHITESPACE = " \t\r\n"


def longest_start_at_end(text: str, strings: list[str] | tuple[str, ...]) -> int:
    """The length of the longest end of `text` that one of `strings` begins with (all of it excluded)."""
    best = 0
    for string in strings:
        for n in range(min(len(string) - 1, len(text)), best, -1):
            if text.endswith(string[:n]):
                best = n
                break
    return best


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: list[str] | None = None,
        include_stop_str: bool = False,
        skip_special_tokens: bool = True,
        markup: tuple[str, ...] = (),  # triggers of tool-call markup, where the content ends
    ):
        self.tokenizer = tokenizer
        self.stop = stop or []
        self.markup = markup
        self.markup_at: int | None = None  # where the first trigger (and the whitespace before it) begins
        self._markup_sought = 0  # the text searched for a trigger so far
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
        if finished or self.stopped_by is not None or not self.stop or self.markup_at is not None:
            end = len(self.text)  # no stop string can end it any more: everything is released
        else:  # content that may yet turn out to be markup is held too: a stop string may still end there
            end = max(self.emitted, min(len(self.text) - self.hold, self._content_end(finished=False)))
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
        self._find_stop(finished=True)

    def _content_end(self, finished: bool) -> int:
        """Where the content ends, as far as is known: at the first trigger of markup, or (but at the
        end) where the text's end may be whitespace before one or a trigger's start."""
        if not self.markup:
            return len(self.text)
        if self.markup_at is None:
            start = max(0, self._markup_sought - max(map(len, self.markup)) + 1)
            found = [i for trigger in self.markup if (i := self.text.find(trigger, start)) >= 0]
            self._markup_sought = len(self.text)
            if found:
                self.markup_at = self._before_whitespace(min(found))
        if self.markup_at is not None:
            return self.markup_at
        if finished:
            return len(self.text)
        return self._before_whitespace(len(self.text) - longest_start_at_end(self.text, self.markup))

    def _before_whitespace(self, end: int) -> int:
        """Where the whitespace that ends the text before `end` begins (walked back, not copied)."""
        while end > 0 and self.text[end - 1] in WHITESPACE:
            end -= 1
        return end

    def _find_stop(self, finished: bool = False) -> bool:
        if not self.stop:
            return False
        start, end = max(0, self.emitted - self.hold), self._content_end(finished)
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start, end)) >= 0]
        if not hits:
            return False
        pos, stop = min(hits)
        self.text = self.text[: pos + len(stop) if self.include_stop_str else pos]
        self.stopped_by = stop
        return True
