"""Generation: one engine request as the server sees it — detokenized choices, stop strings, usage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.core_client import AsyncEngineClient, EngineDeadError, QueuePlace, RequestShed
from pyinfer.engine.messages import RequestMetrics, SeqOutput, TokenLogprob
from pyinfer.engine.outputs import ChoiceOutput
from pyinfer.sampling_params import SamplingParams
from pyinfer.server.errors import OpenAIError, from_exception
from pyinfer.server.prometheus import ServerMetrics
from pyinfer.server.protocol import Performance, PromptTokensDetails, Usage
from pyinfer.server.protocol_tools import FunctionCall, ToolCall
from pyinfer.server.tool_parser import Parsed, ToolCallDelta, ToolCallParser
from pyinfer.tokenizer import Tokenizer


@dataclass
class Choice(ChoiceOutput):
    """A choice as the server replies with it: the content apart from its tool calls, and timings."""

    parser: ToolCallParser | None = None  # where the request offers tools
    text: str = ""  # the content: without the tool calls' markup
    tool_calls: list[ToolCall] = field(default_factory=list)
    first_token_at: float | None = None
    last_token_at: float | None = None

    def timings(self, sent_at: float) -> RequestMetrics:
        """The engine's timings; estimated from arrival times when the server stopped the choice itself."""
        if self.metrics is not None:
            return self.metrics
        first = self.first_token_at or sent_at
        last = self.last_token_at or first
        return RequestMetrics(
            queue_ms=0.0,
            prefill_ms=(first - sent_at) * 1e3,
            decode_ms=(last - first) * 1e3,
            time_to_first_token_ms=(first - sent_at) * 1e3,
            decode_iterations=max(self.num_tokens - 1, 0),
        )

    def add_parsed(self, parsed: Parsed) -> None:
        """The parser's output joined into the whole reply."""
        self.text += parsed.content
        for delta in parsed.calls:
            if delta.name is not None:
                assert delta.id is not None
                self.tool_calls.append(
                    ToolCall(id=delta.id, function=FunctionCall(name=delta.name, arguments=""))
                )
            self.tool_calls[delta.index].function.arguments += delta.arguments


@dataclass
class Delta:
    """What one engine output added to one choice."""

    index: int
    text: str
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class Generation:
    def __init__(
        self,
        engine: AsyncEngineClient,
        tokenizer: Tokenizer,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        index_offset: int = 0,  # where this prompt's choices start in a multi-prompt reply
        tool_parser: Callable[[], ToolCallParser] | None = None,  # one parser per choice
        metrics: ServerMetrics | None = None,  # told of each token's arrival and of the end
        timeout: float | None = None,  # seconds it may take in all; past them it is aborted
        queue_place: QueuePlace | None = None,  # held for it since its request's admission
        sheddable: bool = True,  # False for one of several prompts: the reply is served or refused whole
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.index_offset = index_offset
        self.choices = [self._choice(i, tool_parser() if tool_parser else None) for i in range(params.n)]
        self.num_cached_tokens = 0
        self.num_cache_written_tokens = 0
        self.sent_at = time.perf_counter()
        self.metrics = metrics
        self.timeout = timeout
        self.queue_place = queue_place
        self.sheddable = sheddable
        self.started = False  # sent to the engine
        self.error: str | None = None  # the code of the error that ended it, for the access log

    def _choice(self, index: int, parser: ToolCallParser | None) -> Choice:
        """A choice whose stop strings apply to its content only: never within a tool call's markup, and
        not at all where the reply may hold nothing but calls."""
        params = self.params
        stop = [] if parser is not None and parser.besides_calls == "nothing" else params.stop
        detokenizer = IncrementalDetokenizer(
            self.tokenizer,
            stop,
            params.include_stop_str_in_output,
            params.skip_special_tokens,
            markup=parser.triggers if parser is not None and stop else (),
        )
        return Choice(index, detokenizer, parser=parser)

    async def run(self) -> AsyncIterator[Delta]:
        """Deltas as tokens arrive; leaving early aborts the request in the engine."""
        self.sent_at = time.perf_counter()
        self.started = True
        outputs = self.engine.generate(
            self.request_id, self.prompt_token_ids, self.params, self.queue_place, self.sheddable
        )
        deadline = None if self.timeout is None else self.sent_at + self.timeout
        try:
            async with aclosing(outputs):
                while True:
                    try:  # a wait cut short cancels the engine's stream, which aborts the request
                        out = await (
                            anext(outputs)
                            if deadline is None
                            else asyncio.wait_for(anext(outputs), max(0.0, deadline - time.perf_counter()))
                        )
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise OpenAIError(  # the same request would run as long again: not retried
                            504,
                            f"The request took longer than {self.timeout:g} s.",
                            type="server_error",
                            code="request_timeout",
                            headers={"x-should-retry": "false"},
                        ) from None
                    delta = self._apply(out)
                    if delta is not None:
                        yield delta
        except RequestShed:  # given back by the engine before it ran: refused as on arrival, and refunded
            self.started = False
            if self.metrics is not None:
                self.metrics.sheds["queue_full"].inc()
            self.error = "queue_full"
            raise
        except (OpenAIError, EngineDeadError) as e:  # a stream that began is still a 200: say why it ended
            detail = from_exception(e).detail
            self.error = detail.code or detail.type
            raise
        finally:
            if self.metrics is not None and self.started:  # a shed one is a refusal, not a reply served
                self.metrics.observe(self, time.perf_counter() - self.sent_at)

    @property
    def tokens_used(self) -> int:
        """Prompt and generated tokens, once sent to the engine (nothing before)."""
        return len(self.prompt_token_ids) + sum(c.num_tokens for c in self.choices) if self.started else 0

    def prompt_text(self) -> str:
        return self.tokenizer.decode(self.prompt_token_ids, skip_special_tokens=False)

    def _apply(self, out: SeqOutput) -> Delta | None:
        choice = self.choices[out.index]
        added = choice.add(out)
        if added is None:  # output that crossed our abort of this choice
            return None
        if added.stop_engine:
            self.engine.abort(self.request_id, out.index)
        now = time.perf_counter()
        if self.metrics is not None:
            if choice.last_token_at is not None:
                self.metrics.token_gap(now - choice.last_token_at)
            for _ in range(added.num_tokens - 1):  # tokens that arrived together (coalesced): no gap between
                self.metrics.token_gap(0.0)
        choice.first_token_at = choice.first_token_at or now
        choice.last_token_at = now
        if out.index == 0:  # the choice that computes the prompt; the others find it cached
            self.num_cached_tokens = out.num_cached_tokens
            self.num_cache_written_tokens = out.num_cache_written_tokens
        finish = choice.finish_reason
        parsed = Parsed(content=added.text)
        if choice.parser is not None:
            parsed = choice.parser.feed(added.text)
            if finish is not None:
                parsed.join(choice.parser.finish())
                if finish == "stop" and choice.parser.num_calls:
                    finish = choice.finish_reason = "tool_calls"
        choice.add_parsed(parsed)
        if not parsed.content and not parsed.calls and finish is None and not added.logprobs:
            return None
        return Delta(self.index_offset + out.index, parsed.content, added.logprobs, finish, parsed.calls)


def run_all(generations: list[Generation]) -> AsyncIterator[Delta]:
    """Deltas of several generations, interleaved as they come (one's own, as they are)."""
    return generations[0].run() if len(generations) == 1 else _interleaved(generations)


async def _interleaved(generations: list[Generation]) -> AsyncIterator[Delta]:
    queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()

    async def pump(gen: Generation) -> None:
        try:
            async for delta in gen.run():
                queue.put_nowait(delta)
            queue.put_nowait(None)
        except Exception as e:
            queue.put_nowait(e)

    tasks = [asyncio.create_task(pump(g)) for g in generations]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def usage(generations: list[Generation]) -> Usage:
    prompt = sum(len(g.prompt_token_ids) for g in generations)
    completion = sum(c.num_tokens for g in generations for c in g.choices)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=sum(g.num_cached_tokens for g in generations),
            cache_write_tokens=sum(g.num_cache_written_tokens for g in generations),
        ),
        performance=performance(generations),
    )


def performance(generations: list[Generation]) -> Performance:
    """Queue, prefill and first-token times of the slowest prompt; decode over all choices together."""
    firsts = [g.choices[0].timings(g.sent_at) for g in generations]
    alls = [c.timings(g.sent_at) for g in generations for c in g.choices]
    decode_ms = max(m.decode_ms for m in alls)
    iterations = sum(m.decode_iterations for m in alls)
    return Performance(
        queue_ms=round(max(m.queue_ms for m in firsts), 3),
        prefill_ms=round(max(m.prefill_ms for m in firsts), 3),
        decode_ms=round(decode_ms, 3),
        decode_iterations=iterations,
        tokens_per_second=round(iterations / decode_ms * 1e3, 2) if decode_ms > 0 else 0.0,
        time_to_first_token_ms=round(max(m.time_to_first_token_ms for m in firsts), 3),
    )
