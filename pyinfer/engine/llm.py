"""The offline API: LLM(model).generate(prompts, SamplingParams(...)) and .chat(messages)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyinfer.config import EngineConfig
from pyinfer.engine.detokenizer import IncrementalDetokenizer
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.messages import RequestMetrics, SeqOutput, TokenLogprob
from pyinfer.engine.sampling_params import SamplingParams
from pyinfer.tokenizer import load_tokenizer

Prompt = str | list[int]
Messages = list[dict[str, Any]]


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    metrics: RequestMetrics | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return all(o.finish_reason is not None for o in self.outputs)


class LLM:
    def __init__(self, model: str | None = None, **engine_args: Any):
        self.engine = LLMEngine(EngineConfig(model=model, **engine_args))
        self.tokenizer = load_tokenizer(
            self.engine.model_path, self.engine.load_format, engine_args.get("tokenizer")
        )
        self._ids = itertools.count()

    def generate(
        self, prompts: Prompt | list[Prompt], params: SamplingParams | list[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """Runs all prompts together in continuous batches; returns outputs in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        return self._run([self._encode(p) for p in prompts], params_list)

    def chat(
        self, messages: Messages | list[Messages], params: SamplingParams | list[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        params_list = (
            params if isinstance(params, list) else [params or SamplingParams()] * len(conversations)
        )
        return self._run([self._tokenizer().encode_chat(c) for c in conversations], params_list)

    def stream(self, prompt: Prompt | Messages, params: SamplingParams | None = None) -> Iterator[str]:
        """Yields text as it is generated for one prompt (or one conversation, given messages)."""
        params = params or SamplingParams()
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            ids = self._tokenizer().encode_chat(prompt)
        else:
            ids = self._encode(prompt)
        request_id = f"stream-{next(self._ids)}"
        detok = self._detokenizer(params)
        self.engine.add_request(request_id, ids, params)
        try:
            done = False
            while not done:
                outputs = self.engine.step()
                self._raise_rejected()
                for out in outputs:
                    if out.request_id == request_id:
                        done = out.finish_reason is not None
                        text = detok.add(_visible(out), finished=done)
                        if text:
                            yield text
                        if detok.stopped_by is not None:
                            done = True
        finally:
            self.engine.abort(request_id)

    def _run(self, prompt_ids: list[list[int]], params_list: list[SamplingParams]) -> list[RequestOutput]:
        results: dict[str, RequestOutput] = {}
        detoks: dict[tuple[str, int], IncrementalDetokenizer] = {}
        for ids, params in zip(prompt_ids, params_list, strict=True):
            request_id = str(next(self._ids))
            self.engine.add_request(request_id, ids, params)
            results[request_id] = RequestOutput(
                request_id, ids, [CompletionOutput(i) for i in range(params.n)]
            )
            if self.tokenizer is not None:
                for i in range(params.n):
                    detoks[request_id, i] = self._detokenizer(params)
        try:
            while self.engine.has_unfinished():
                outputs = self.engine.step()
                self._raise_rejected()
                for out in outputs:
                    self._apply(results[out.request_id], out, detoks.get((out.request_id, out.index)))
        except BaseException:
            for request_id in results:
                self.engine.abort(request_id)
            raise
        return list(results.values())

    def _raise_rejected(self) -> None:
        """A request the engine refused after taking it (its constraint did not compile)."""
        for _, error in self.engine.pop_rejected():
            raise error

    def _apply(self, result: RequestOutput, out: SeqOutput, detok: IncrementalDetokenizer | None) -> None:
        choice = result.outputs[out.index]
        if choice.finish_reason is not None:
            return
        if out.index == 0:  # the prompt is computed once, by choice 0; the others share its blocks
            result.num_cached_tokens = out.num_cached_tokens
        choice.token_ids.extend(out.new_token_ids)
        if out.logprobs is not None:
            choice.logprobs = (choice.logprobs or []) + out.logprobs
        if detok is not None:
            choice.text += detok.add(_visible(out), finished=out.finish_reason is not None)
            if detok.stopped_by is not None and out.finish_reason is None:
                self.engine.abort(out.request_id, out.index)
                choice.finish_reason = "stop"
        if out.finish_reason is not None:
            choice.finish_reason = out.finish_reason
            choice.metrics = out.metrics

    def _detokenizer(self, params: SamplingParams) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(
            self._tokenizer(), params.stop, params.include_stop_str_in_output, params.skip_special_tokens
        )

    def _encode(self, prompt: Prompt) -> list[int]:
        return list(prompt) if not isinstance(prompt, str) else self._tokenizer().encode(prompt)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass prompts as token id lists")
        return self.tokenizer


def _visible(out: SeqOutput) -> list[int]:
    """Tokens whose text belongs in the output: not the stop token that ended the sequence."""
    return out.new_token_ids if out.stop_token_id is None else out.new_token_ids[:-1]
