"""One choice of a request as the engine's outputs for it arrive: its tokens, logprobs, text through the
detokenizer and its stop strings, and how it finished. The offline LLM and the server keep one a choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.messages import RequestMetrics, SeqOutput, TokenLogprob


class Added(NamedTuple):
    """What one engine output added to a choice."""

    text: str
    num_tokens: int  # the output's tokens that belong to the reply: none past a stop string
    logprobs: list[TokenLogprob] | None  # theirs
    stop_engine: bool  # a stop string ended the choice here, before the engine did: tell it to stop


@dataclass
class ChoiceOutput:
    index: int
    detokenizer: IncrementalDetokenizer | None = field(
        default=None, repr=False, compare=False
    )  # None: ids only
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None  # None unless asked for; only settled tokens' (below)
    held_logprobs: list[TokenLogprob] = field(default_factory=list, init=False, repr=False, compare=False)
    finish_reason: str | None = None
    metrics: RequestMetrics | None = None  # the engine's, with its final output

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def add(self, out: SeqOutput) -> Added | None:
        """Take one engine output for this choice; None for output that crossed an abort of it."""
        if self.finish_reason is not None:
            return None
        tokens, logprobs = out.new_token_ids, out.logprobs
        finish, text, stop_engine = out.finish_reason, "", False
        if self.detokenizer is not None:
            visible = tokens if out.stop_token_id is None else tokens[:-1]
            before = len(self.detokenizer.token_ids)
            text = self.detokenizer.add(visible, finished=finish is not None)
            if self.detokenizer.stopped_by is not None:
                # outputs that waited together (core_client.coalesced) may run on past the stop string
                kept = len(self.detokenizer.token_ids) - before
                tokens, logprobs = tokens[:kept], None if logprobs is None else logprobs[:kept]
                stop_engine, finish = finish is None, "stop"
        self.token_ids.extend(tokens)
        if logprobs is not None:
            logprobs = self._settled_logprobs(logprobs, finish is not None)
        self.finish_reason = finish
        self.metrics = out.metrics
        if finish is not None:
            self.detokenizer = None  # done with it (and the results of LLM.generate stay light)
        return Added(text, len(tokens), logprobs, stop_engine)

    def _settled_logprobs(self, logprobs: list[TokenLogprob], finished: bool) -> list[TokenLogprob]:
        """The logprobs to give out now: a token's once its text is (text held back as the possible start
        of a stop string holds them too). Tokens that are not the reply's text have none: those past a
        stop string's cut, and the model's stop token. Without a detokenizer (ids only), every token's."""
        held = self.held_logprobs
        held.extend(logprobs)
        self.logprobs = self.logprobs or []
        if self.detokenizer is None:
            settled = len(held)
        else:  # a token of no text of its own, given out before a cut at its place, stays given
            settled = max(self.detokenizer.final_tokens - len(self.logprobs), 0)
        out, self.held_logprobs = held[:settled], [] if finished else held[settled:]
        self.logprobs.extend(out)
        return out
