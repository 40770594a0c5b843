"""ServerContext: what every route needs — settings, the engine client, the tokenizer, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jinja2
import msgspec
from fastapi import Request

from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import AsyncEngineClient, EngineLink, QueuePlace
from pyinfer.generation_config import describe, generation_defaults, with_defaults
from pyinfer.heap import freeze_heap
from pyinfer.model_files import resolve_model
from pyinfer.sampling_params import SamplingParams, SamplingParamsError, check_request
from pyinfer.server.config import ServerConfig, default_hang_timeout
from pyinfer.server.errors import OpenAIError, bad_request, overloaded, rate_limited, unavailable
from pyinfer.server.generation import Generation
from pyinfer.server.prometheus import ServerMetrics
from pyinfer.server.protocol_tools import ToolRequest
from pyinfer.server.rate_limits import RateLimiter, RateLimitExceeded
from pyinfer.server.response_store import ResponseStore
from pyinfer.server.shared_state import IN_MEMORY, SharedState
from pyinfer.server.tool_formats import tool_support
from pyinfer.server.tool_parser import ToolCallParser
from pyinfer.server.tool_prompt import chat_prompt
from pyinfer.tokenizer import (
    DEFAULT_TEMPLATE,
    TemplateOptions,
    TemplateVariableClash,
    Tokenizer,
    load_tokenizer,
)

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 4096  # longer texts are tokenized in a thread, off the event loop


class GenerationRequest(Protocol):
    """What chat, completions and Responses bodies have in common."""

    model: str | None

    def unsupported(self) -> tuple[str, str] | None: ...

    def engine_params(self, defaults: dict[str, Any]) -> SamplingParams: ...

    def tool_request(self) -> ToolRequest | None: ...

    @property
    def limit_param(self) -> str: ...


class Admitted(NamedTuple):
    """A request past admission: its engine parameters, the tokenizer, its tools (if any)."""

    params: SamplingParams
    tokenizer: Tokenizer
    tools: ToolRequest | None


class ServerContext:
    def __init__(
        self,
        config: ServerConfig,
        engine_config: EngineConfig,
        link: EngineLink | None = None,
        shared_state: str = IN_MEMORY,  # the database several API processes share (api_servers.py)
    ):
        self.config = config
        self.engine_config = engine_config
        self.model_path, self.load_format = resolve_model(engine_config.model, engine_config.load_format)
        self.model_name = config.served_model_name or Path(self.model_path).stem
        # What a request leaves out: the model's sampling defaults, --max-tokens over its own limit
        model_defaults = generation_defaults(config.generation_config, self.model_path, self.load_format)
        self.request_defaults = with_defaults(model_defaults, max_tokens=config.max_tokens)
        SamplingParams(**self.request_defaults)  # a file's impossible value fails here, not in a request
        log.info("sampling defaults for requests that leave them out: %s", describe(self.request_defaults))
        self.engine = AsyncEngineClient(engine_config, config.core_args(), link)
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_loaded = False
        self.tool_support = tool_support(None, config.tool_call_parser)  # the template's, once loaded
        self.tool_markup_is_special = False  # whether skipping special tokens would drop its triggers
        self.num_tool_call_failures = 0  # call markup that did not parse as a call, over all replies
        self.shared = SharedState(shared_state)
        self.responses = ResponseStore(self.shared, config.max_stored_responses, config.stored_response_ttl)
        self.metrics = ServerMetrics(self.model_name)
        self.rate_limits = RateLimiter(self.shared, config.rate_limit_rpm, config.rate_limit_tpm)
        self.draining = False  # set on SIGTERM/SIGINT: no new work
        self.created = int(time.time())
        self.fatal_error: str | None = None  # why the server must exit non-zero
        self.on_fatal: Callable[[], None] = lambda: None  # asks the HTTP server to stop

    def load_tokenizer(self) -> None:
        self.tokenizer = load_tokenizer(self.model_path, self.load_format, self.engine_config.tokenizer)
        if self.tokenizer is not None:
            self.tokenizer.compile_chat_template()
        self.tokenizer_loaded = True

    async def load(self) -> None:
        """Load the tokenizer here (unless loaded already) while the engine process loads the model."""
        if not self.tokenizer_loaded:
            await asyncio.to_thread(self.load_tokenizer)
        if self.tokenizer is not None:
            self.tool_support = tool_support(self.tokenizer.hf.chat_template, self.config.tool_call_parser)
            self.tool_markup_is_special = any(
                self.tokenizer.is_skipped_special(t) for t in self.tool_support.format.triggers
            )
            how = (
                "the chat template" if self.tool_support.template_renders_tools else "the generic tool prompt"
            )
            log.info("tools: given by %s, calls read as %s", how, self.tool_support.format.name)
        freeze_heap()  # what this process made while starting, before the engine is ready to generate
        ready = await self.engine.wait_ready()
        log.info("ready to serve %s (max_model_len %d)", self.model_name, ready.max_model_len)

    def fail(self, reason: str) -> None:
        """Something we cannot serve without is gone: stop, and exit non-zero."""
        log.error("%s; shutting down", reason)
        self.fatal_error = reason
        self.on_fatal()

    @property
    def ready(self) -> bool:
        return self.engine.ready is not None and self.tokenizer_loaded and not self.engine.dead

    def engine_hung_for(self) -> float | None:
        """Seconds the ready engine has left a question unanswered, where that is past the hang timeout;
        None while it answers (or loads, or the check is off)."""
        if not self.ready or (ready := self.engine.ready) is None:
            return None
        timeout = self.config.engine_hang_timeout
        if timeout is None:
            timeout = default_hang_timeout(ready.device)
        if not timeout:
            return None
        silent = self.engine.unanswered_for()
        return silent if silent >= timeout else None

    # ---- checks routes make before generating ---------------------------------------------------
    def admit(self, request: Request, body: GenerationRequest) -> Admitted:
        """The checks every generation request passes, in this order, then its sampling parameters;
        a request that offers tools is decoded under the grammar of their calls, markup kept. A request
        admitted holds a place in the queue from here (one the queue limits count) until it is sent."""
        self.check_model(body.model)
        self.require_ready()
        if problem := body.unsupported():
            raise bad_request(problem[1], param=problem[0])
        try:
            params = body.engine_params(self.request_defaults)
        except SamplingParamsError as e:  # named as the body names the reply's limit
            raise e.named({"max_tokens": body.limit_param}) from None
        if params.priority and self.engine_config.scheduling_policy != "priority":
            raise bad_request(
                "priority needs the server's priority scheduling (--scheduling-policy priority)", "priority"
            )
        tools = body.tool_request()
        if tools is not None and tools.active:
            constraint = tools.constraint(self.tool_support.format, params.structured)
            params = msgspec.structs.replace(params, structured=constraint)
            if self.tool_markup_is_special:  # the parser must see it (Mistral's [TOOL_CALLS] token)
                params = msgspec.structs.replace(params, skip_special_tokens=False)
        tokenizer = self.require_tokenizer()
        # Checked and held with no await between: a request admitted meanwhile is counted. Counted over
        # every API process (each reads the others' on the queue board), and only the requests that this
        # one would not overtake: a full queue of less urgent ones does not make an urgent one wait.
        limit = self.config.max_queued_requests
        if limit is not None and (ahead := self.engine.queued_ahead_of(params.priority)[0]) >= limit:
            waiting = self._waiting("requests", params.priority)
            raise self._shed("queue_full", f"{ahead} {waiting} (at most {limit})")
        place = self.engine.hold_place(params.priority)
        state = request.scope.setdefault("state", {})
        state["queue_place"] = place
        state.setdefault("at_end", []).append(place.release)  # run by RequestContextMiddleware
        return Admitted(params, tokenizer, tools)

    def refusable_late(self, params: SamplingParams) -> bool:
        """Whether the engine may still refuse a request after it is sent, before its first output: a
        constraint that does not compile (a 400), or a full queue that sheds it for a more urgent one (a
        503). Its stream's status then waits for that output, so that a refusal is an error reply."""
        bounded = self.config.max_queued_requests is not None or self.config.max_queued_tokens is not None
        return params.structured is not None or bounded

    def _waiting(self, what: str, priority: int) -> str:
        """`what` of the queued requests a bound counted for a request of `priority`: all of them, or
        under the priority policy those it would not overtake."""
        if self.engine_config.scheduling_policy != "priority":
            return f"{what} are waiting"
        return f"{what} of priority {priority} or more urgent are waiting"

    def _shed(self, code: str, why: str) -> OpenAIError:
        """A request refused because the queue is full: a 503 the client may retry in a moment."""
        self.metrics.sheds[code].inc()  # a code missing from SHED_CODES fails here
        return overloaded(code, why)

    def end_in_flight(self, why: str = "its drain timeout ran out") -> None:
        """The drain is over (`why`): every generation still running, or sent from now on, ends with an
        error (a stream with an error event), rather than being cut off mid-reply when the HTTP server
        stops."""
        if self.engine.num_requests:
            log.warning("%s: ending %d requests still in flight", why, self.engine.num_requests)
        self.engine.fail_all(
            lambda: unavailable(f"The server shut down before the request finished ({why}).", "shutting_down")
        )

    def require_ready(self) -> None:
        if self.engine.dead:
            raise OpenAIError(500, "the engine process has died", type="server_error", code="engine_dead")
        if self.draining:
            raise unavailable("the server is shutting down", "shutting_down")
        if not self.ready:
            raise unavailable(
                "the model is still loading; retry when /ready says so", "model_loading", retry_after_s=5
            )

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise bad_request("this model has no tokenizer: it cannot take or give text")
        return self.tokenizer

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise OpenAIError(
                404,
                f"The model '{model}' does not exist. This server serves '{self.model_name}'.",
                param="model",
                code="model_not_found",
            )

    def check_prompt(
        self, prompt_ids: list[int], params: SamplingParams, body: GenerationRequest, param: str = "prompt"
    ) -> None:
        """Reject what the engine would, before a streamed reply has begun (naming the body's fields)."""
        ready = self.engine.ready
        assert ready is not None
        try:
            check_request(prompt_ids, params, ready.vocab_size, ready.max_model_len, param)
        except SamplingParamsError as e:
            raise e.named({"max_tokens": body.limit_param}) from None

    def refuse_unfittable(self, chars: int, param: str) -> None:
        """Refuse, before tokenizing it, a prompt of `chars` characters that cannot fit the context
        whatever its tokens, since none stands for more than the tokenizer's longest piece: tokenizing
        megabytes takes seconds that a request bound to be refused must not take."""
        ready, tokenizer = self.engine.ready, self.require_tokenizer()
        assert ready is not None
        if chars > ready.max_model_len * tokenizer.max_token_chars:
            raise SamplingParamsError(
                param,
                f"too long: this model's maximum context length is {ready.max_model_len} tokens, and "
                f"{chars} characters of text make more tokens than that",
            )

    # ---- tokenization, off the event loop when it is long ---------------------------------------
    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        tokenizer = self.require_tokenizer()
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return tokenizer.encode(text, add_special_tokens)
        return await asyncio.to_thread(tokenizer.encode, text, add_special_tokens)

    def generation(
        self,
        request: Request,
        tokenizer: Tokenizer,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        tools: ToolRequest | None = None,
    ) -> Generation:
        """The generation of a request with one prompt (see generations)."""
        return self.generations(request, tokenizer, [request_id], [prompt_ids], params, tools)[0]

    def generations(
        self,
        request: Request,
        tokenizer: Tokenizer,
        request_ids: list[str],
        prompts: list[list[int]],
        params: SamplingParams,
        tools: ToolRequest | None = None,
    ) -> list[Generation]:
        """One generation per prompt of a request, as every route runs them (tool parsing, metrics, the
        timeout): shed if the queue's prompt tokens would pass their bound, else held in the request's
        queue place; charged to the caller's allowance together, and counted in the access log."""
        place: QueuePlace = request.scope["state"]["queue_place"]
        limit, asked = self.config.max_queued_tokens, sum(map(len, prompts))
        if limit is not None:
            ahead, queued = self.engine.queued_ahead_of(params.priority)  # its own place among them
            # only other requests' tokens refuse it: one over the bound is served when none waits before it
            if ahead > 1 and queued + asked > limit:
                waiting = self._waiting("prompt tokens of requests", params.priority)
                why = f"{queued} {waiting} and this request brings {asked} (at most {limit} may wait)"
                raise self._shed("queue_full_tokens", why)
        gens = [
            Generation(
                self.engine,
                tokenizer,
                request_id,
                prompt_ids,
                params,
                index_offset=i * params.n,
                tool_parser=self._tool_parsers(tools),
                metrics=self.metrics,
                timeout=self.config.request_timeout,
                queue_place=place,
                sheddable=len(prompts) == 1,
            )
            for i, (request_id, prompt_ids) in enumerate(zip(request_ids, prompts, strict=True))
        ]
        self._charge_tokens(request, gens)
        place.add_tokens(asked)
        request.scope["state"].setdefault("generations", []).extend(gens)
        return gens

    async def stats(self, patience: float) -> dict[str, Any]:
        """The engine's counters with the ones this API process keeps (`patience`: EngineClient.stats')."""
        engine = await self.engine.stats(patience)
        return {**engine, "num_tool_call_parse_failures": self.num_tool_call_failures}

    def _charge_tokens(self, request: Request, gens: list[Generation]) -> None:
        """Take the request's prompts plus `max_tokens` for each choice (the prompts alone without
        `max_tokens`) from the caller's allowance in one charge, or refuse it with a 429 (one that says
        waiting will not help when the whole request is larger than the limit). The charge is settled
        against what was used once the response has ended, however it ends."""
        state = request.scope["state"]
        allowance = state.get("allowance")
        if allowance is None or allowance.tokens is None:
            return
        charged = sum(len(g.prompt_token_ids) + g.params.n * (g.params.max_tokens or 0) for g in gens)
        try:
            self.rate_limits.charge_tokens(allowance, charged)
        except RateLimitExceeded as e:
            raise rate_limited(e, self.rate_limits.headers(allowance)) from None

        def settle() -> None:  # run by RequestContextMiddleware when the response has ended
            self.rate_limits.settle_tokens(allowance, charged, sum(g.tokens_used for g in gens))

        state.setdefault("at_end", []).append(settle)

    def _tool_parsers(self, tools: ToolRequest | None) -> Callable[[], ToolCallParser] | None:
        """A maker of one parser per choice of a reply, where the request offers tools."""
        if tools is None or not tools.active:
            return None

        def failed() -> None:
            self.num_tool_call_failures += 1
            self.metrics.tool_call_failures.inc()

        return lambda: tools.parser(self.tool_support.format, failed)

    async def encode_chat(
        self,
        messages: list[dict[str, Any]],
        tools: ToolRequest | None = None,
        param: str = "messages",
        options: TemplateOptions = DEFAULT_TEMPLATE,
        must_fit: bool = False,
    ) -> list[int]:
        """The prompt of a conversation, with the tools it offers as the model is given them; one that
        `must_fit` the context (to be generated from, not cut or counted) and cannot is refused before it
        is tokenized."""
        tokenizer = self.require_tokenizer()
        messages, template_tools = chat_prompt(messages, tools, self.tool_support)
        chars = sum(len(m["content"]) for m in messages)
        if must_fit:
            self.refuse_unfittable(chars, param)
        try:
            if chars <= INLINE_TOKENIZE_CHARS:
                return tokenizer.encode_chat(messages, template_tools, options)
            return await asyncio.to_thread(tokenizer.encode_chat, messages, template_tools, options)
        except TemplateVariableClash as e:
            raise bad_request(str(e), param="chat_template_kwargs") from None
        except (ValueError, jinja2.TemplateError) as e:  # no chat template, or one refusing these messages
            raise bad_request(str(e), param=param) from None


def server_context(request: Request) -> ServerContext:
    return request.app.state.ctx
