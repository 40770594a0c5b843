"""One choice of a request as the engine's outputs for it arrive: its tokens, logprobs, text through the
detokenizer and its stop strings, and how it finished. The offline LLM and the server keep one a choice."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.messages import RequestMetrics, SeqOutput, TokenLogprob


@dataclass
class ChoiceOutput:
    index: int
    detokenizer: IncrementalDetokenizer | None = field(
        default=None, repr=False, compare=False
    )  # None: ids only
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None  # None unless asked for
    finish_reason: str | None = None
    metrics: RequestMetrics | None = None  # the engine's, with its final output

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def add(self, out: SeqOutput) -> tuple[str, bool] | None:
        """The text `out` adds, and whether the engine must now stop this choice (a stop string was
        found here, before the engine ended it); None for output that crossed an abort of this choice."""
        if self.finish_reason is not None:
            return None
        self.token_ids.extend(out.new_token_ids)
        if out.logprobs is not None:
            self.logprobs = (self.logprobs or []) + out.logprobs
        finish, text, stop_engine = out.finish_reason, "", False
        if self.detokenizer is not None:
            visible = out.new_token_ids if out.stop_token_id is None else out.new_token_ids[:-1]
            text = self.detokenizer.add(visible, finished=finish is not None)
            if self.detokenizer.stopped_by is not None:
                stop_engine, finish = finish is None, "stop"
        self.finish_reason = finish
        self.metrics = out.metrics
        return text, stop_engine
