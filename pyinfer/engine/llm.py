"""The offline API: LLM(model).generate(prompts, SamplingParams(...)) and .chat(messages)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyinfer.config import EngineConfig
from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.messages import SeqOutput
from pyinfer.engine.outputs import ChoiceOutput
from pyinfer.sampling_params import SamplingParams
from pyinfer.tokenizer import load_tokenizer

Prompt = str | list[int]
Messages = list[dict[str, Any]]


@dataclass
class CompletionOutput(ChoiceOutput):
    text: str = ""


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

    def close(self) -> None:
        """Stops the engine's other processes (the ranks of a tensor-parallel group); the engine cannot
        run after it. A process holds one tensor-parallel group at a time: close one before the next."""
        self.engine.close()

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
        choice = ChoiceOutput(0, self._detokenizer(params))
        self.engine.add_request(request_id, ids, params)
        try:
            while choice.finish_reason is None:
                outputs = self.engine.step()
                self._raise_rejected()
                for out in outputs:
                    added = choice.add(out) if out.request_id == request_id and out.index == 0 else None
                    if added is not None and added.text:
                        yield added.text
        finally:
            self.engine.abort(request_id)

    def _run(self, prompt_ids: list[list[int]], params_list: list[SamplingParams]) -> list[RequestOutput]:
        results: dict[str, RequestOutput] = {}
        for ids, params in zip(prompt_ids, params_list, strict=True):
            request_id = str(next(self._ids))
            self.engine.add_request(request_id, ids, params)
            choices = [
                CompletionOutput(i, self._detokenizer(params) if self.tokenizer is not None else None)
                for i in range(params.n)
            ]
            results[request_id] = RequestOutput(request_id, ids, choices)
        try:
            while self.engine.has_unfinished():
                outputs = self.engine.step()
                self._raise_rejected()
                for out in outputs:
                    self._apply(results[out.request_id], out)
        except BaseException:
            for request_id in results:
                self.engine.abort(request_id)
            raise
        return list(results.values())

    def _raise_rejected(self) -> None:
        """A request the engine refused after taking it (its constraint did not compile)."""
        for _, error in self.engine.pop_rejected():
            raise error

    def _apply(self, result: RequestOutput, out: SeqOutput) -> None:
        choice = result.outputs[out.index]
        added = choice.add(out)
        if added is None:
            return
        if out.index == 0:  # the prompt is computed once, by choice 0; the others share its blocks
            result.num_cached_tokens = out.num_cached_tokens
        choice.text += added.text
        if added.stop_engine:
            self.engine.abort(out.request_id, out.index)

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
