"""The Responses API: POST /v1/responses, whole or streamed; GET, DELETE and cancel of stored responses."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from pyinfer.engine.core_client import RequestRejected, RequestShed
from pyinfer.engine.messages import TokenLogprob
from pyinfer.sampling_params import SamplingParams
from pyinfer.server.context import ServerContext, server_context
from pyinfer.server.errors import OpenAIError, bad_request, from_exception
from pyinfer.server.generation import Delta, Generation, usage
from pyinfer.server.logprobs import chat_logprobs
from pyinfer.server.protocol import ChatTokenLogprob
from pyinfer.server.protocol_responses import (
    LOGPROBS_INCLUDED,
    FunctionCallItem,
    IncompleteDetails,
    InputItemList,
    ItemStatus,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseDeleted,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from pyinfer.server.protocol_tools import ToolRequest, check_tool_results
from pyinfer.server.response_store import ResponseStore, StoredResponse
from pyinfer.server.routes.common import (
    drain,
    event_stream,
    json_body,
    json_response,
    primed,
    sse,
    until_disconnected,
)

router = APIRouter()
ResponsesBody = Annotated[ResponsesRequest, Depends(json_body(ResponsesRequest))]

FINAL_EVENTS = {  # status -> the stream's last event; the SDK knows no event for a cancelled response
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
    "failed": "response.failed",
}


@router.post("/v1/responses", response_model=None)
async def create_response(request: Request, body: ResponsesBody) -> Response:
    ctx = server_context(request)
    params, tokenizer, tools = ctx.admit(request, body)
    messages = _earlier_turns(request, body.previous_response_id) + body.messages()
    check_tool_results(messages, "input")
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    cut = body.truncation == "auto"
    prompt_ids = await ctx.encode_chat(system + messages, tools, param="input", must_fit=not cut)
    if cut:
        prompt_ids = await _truncated(ctx, system, messages, tools, params, prompt_ids)
    ctx.check_prompt(prompt_ids, params, body, param="input")
    response = ResponseObject(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="in_progress",
        model=ctx.model_name,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        metadata=body.metadata or {},
        previous_response_id=body.previous_response_id,
        store=body.kept,
        temperature=params.temperature,
        top_p=params.top_p,
        top_logprobs=body.top_logprobs or 0,
        max_tool_calls=body.max_tool_calls,
        prompt_cache_key=body.prompt_cache_key,
        safety_identifier=body.safety_identifier,
        user=body.user,
        tools=[t.model_dump(by_alias=True, exclude_none=True) for t in body.tools or []],
        tool_choice=_echo(body.tool_choice),
        parallel_tool_calls=tools.parallel_in(ctx.tool_support.format) if tools else True,
        truncation=body.truncation or "disabled",
        text=body.text_echo(),
    )
    gen = ctx.generation(request, tokenizer, response.id, prompt_ids, params, tools)
    stored = StoredResponse(response, messages, body.input_items(), owner=_caller(request))
    run = ResponseRun(stored, gen, ctx.responses if body.kept else None)
    if body.stream:
        deltas = run.deltas()
        if ctx.refusable_late(params):
            deltas = await primed(request, deltas)
        return event_stream(_events(run, deltas))
    await until_disconnected(request, drain(run.deltas()))
    return json_response(response)


@router.get("/v1/responses/{response_id}", response_model=None)
async def retrieve_response(request: Request, response_id: str, stream: bool = False) -> Response:
    """The stored response, whole. OpenAI's `stream` (with `starting_after`) replays a background
    response's events, which this server does not keep: asked for, it is a 400, not a JSON answer that
    the client reads as no events."""
    stored = _stored(request, response_id)
    if stream:
        raise bad_request("stream: a stored response is given whole; its events are not kept", param="stream")
    if _included(request, stored):
        return json_response(stored.response)
    return json_response(_without_logprobs(stored.response))


@router.get("/v1/responses/{response_id}/input_items", response_model=None)
async def list_input_items(
    request: Request,
    response_id: str,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
) -> Response:
    """The response's own input items, newest first unless `order=asc`, a page of `limit` (1-100) after
    or before the item with the id given, as OpenAI lists them."""
    if not 1 <= limit <= 100:
        raise bad_request("limit must be between 1 and 100", param="limit")
    stored = _stored(request, response_id)
    _included(request, None)
    items = stored.input_items
    items = items[::-1] if order == "desc" else items
    ids = [item["id"] for item in items]
    for cursor, param in ((after, "after"), (before, "before")):
        if cursor is not None and cursor not in ids:
            raise bad_request(f"No input item with id '{cursor}' in this response.", param=param)
    start = ids.index(after) + 1 if after is not None else 0
    end = ids.index(before) if before is not None else len(items)
    page = items[start:end][:limit]
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return json_response(
        InputItemList(data=page, first_id=first, last_id=last, has_more=start + len(page) < end)
    )


@router.delete("/v1/responses/{response_id}", response_model=None)
async def delete_response(request: Request, response_id: str) -> Response:
    _stored(request, response_id)  # another key's response is not found either
    server_context(request).responses.delete(response_id)
    return json_response(ResponseDeleted(id=response_id))


@router.post("/v1/responses/{response_id}/cancel", response_model=None)
async def cancel_response(request: Request, response_id: str) -> Response:
    """Stop a response still running, whichever connection waits for it and whichever API process runs
    it; cancelling twice is harmless."""
    ctx = server_context(request)
    stored = _stored(request, response_id)
    if stored.response.status == "in_progress":
        if ctx.responses.cancel(response_id):
            stored.response.status = "cancelled"
            if (running := ctx.responses.running.get(response_id)) is not None:  # this process runs it
                running.response.status = "cancelled"
                running.stop()
            else:  # another API process runs it: the engine core aborts it and tells that process
                ctx.engine.abort_anywhere(response_id)
        else:  # it ended since we read it
            stored = _stored(request, response_id)
    if stored.response.status != "cancelled":
        raise bad_request(f"Cannot cancel a response that has finished (status {stored.response.status}).")
    return json_response(stored.response)


@dataclass
class ReplyItem:
    """One output item as the reply reaches it: a message (its text so far) or the choice's call `call`."""

    id: str
    call: int | None = None
    text: str = ""
    logprobs: list[ChatTokenLogprob] = field(default_factory=list)  # its text's, where asked for


class ResponseRun:
    """One response being generated; its stored record (where `store` keeps it) is final once its deltas
    end, however they end. Its output items (messages, function calls) are listed in the order the
    reply wrote them."""

    def __init__(self, stored: StoredResponse, gen: Generation, store: ResponseStore | None):
        self.stored = stored
        self.tokenizer = gen.tokenizer
        self._held_logprobs: list[TokenLogprob] = []  # of text the parser holds back
        self.response = stored.response
        self.gen = gen
        self.store = store
        self.items: list[ReplyItem] = []
        stored.stop = lambda: gen.engine.abort(gen.request_id)
        if store is not None:
            store.put(stored)

    async def deltas(self) -> AsyncIterator[Delta]:
        """The generation's deltas, each yielded once the items it adds to are listed; an error comes
        out as the OpenAIError the response records."""
        failure, refused = None, False
        try:
            if self.response.status == "in_progress":  # not cancelled before it began
                async with aclosing(self.gen.run()) as deltas:
                    async for delta in deltas:
                        delta = self._text_logprobs(delta)
                        if delta.text:
                            message = self._message()
                            message.text += delta.text
                            if delta.logprobs:
                                message.logprobs += chat_logprobs(self.tokenizer, delta.logprobs).content
                        for call in delta.tool_calls:
                            if call.id is not None:
                                self.items.append(ReplyItem(_function_call_id(call.id), call.index))
                        yield delta
        except (RequestRejected, RequestShed) as e:  # refused before it began: an error reply, not its id
            refused = True
            raise from_exception(e) from None
        except Exception as e:
            failure = from_exception(e)
            raise failure from None
        finally:
            if refused:  # its client never saw this response: nothing to keep
                self.stored.stop = None
                if self.store is not None:
                    self.store.discard(self.response.id)
            else:
                if not self.items:  # a reply with neither text nor calls is an empty message
                    self._message()
                self._finish(failure)

    def _text_logprobs(self, delta: Delta) -> Delta:
        """The delta with the logprobs of its text: those of earlier deltas without text (held back by
        the tool-call parser) join the next text; call markup's are dropped (a function call item has
        none)."""
        self._held_logprobs += delta.logprobs or ()
        if not delta.text and not delta.tool_calls:
            return replace(delta, logprobs=None)
        logprobs, self._held_logprobs = self._held_logprobs, []
        if delta.tool_calls:  # the text before a call: the tokens that spell it, not the markup's after
            size, covered = len(delta.text.encode()), 0
            for n, logprob in enumerate(logprobs):
                if covered >= size:
                    logprobs = logprobs[:n]
                    break
                covered += len(self.tokenizer.token_bytes(logprob.token_id))
        return replace(delta, logprobs=logprobs or None)

    def _message(self) -> ReplyItem:
        """The message item text goes to: the last item, or a new one after a call."""
        if not self.items or self.items[-1].call is not None:
            self.items.append(ReplyItem(f"msg_{uuid.uuid4().hex}"))
        return self.items[-1]

    def at(self, call: int) -> int:
        """The output index of the choice's call `call`."""
        return next(i for i, item in enumerate(self.items) if item.call == call)

    def item(self, at: int, status: ItemStatus) -> OutputItem:
        """Output item `at`, whole; one in progress is empty (its text or arguments stream in events)."""
        item = self.items[at]
        if item.call is None:
            parts = [] if status == "in_progress" else [OutputText(text=item.text, logprobs=item.logprobs)]
            return OutputMessage(id=item.id, status=status, content=parts)
        call = self.gen.choices[0].tool_calls[item.call]
        arguments = "" if status == "in_progress" else call.function.arguments
        return FunctionCallItem(
            id=item.id, call_id=call.id, name=call.function.name, arguments=arguments, status=status
        )

    def _finish(self, failure: OpenAIError | None) -> None:
        r = self.response
        finish_reason = self.gen.choices[0].finish_reason
        if r.status == "in_progress":  # else cancelled already
            if failure is not None:
                r.status = "failed"
                r.error = ResponseError(code=failure.detail.code or failure.detail.type, message=str(failure))
            elif finish_reason == "length":
                r.status, r.incomplete_details = "incomplete", IncompleteDetails(reason="max_output_tokens")
            elif finish_reason is None:  # the client went away, or a cancel through another API process
                r.status = "cancelled"
            else:
                r.status, r.completed_at = "completed", int(time.time())
        self._close_output()
        self.stored.stop = None
        if self.store is not None and not self.store.finish(self.stored):
            # cancelled through another API process as it ended: recorded as a cancel here would have been
            r.status, r.completed_at, r.incomplete_details, r.error = "cancelled", None, None, None
            self._close_output()
            self.store.finish(self.stored)

    def _close_output(self) -> None:
        """The output items and usage as the response's status leaves them."""
        r = self.response
        last = "completed" if r.status == "completed" else "incomplete"  # the items before it closed whole
        r.output = [
            self.item(at, "completed" if at < len(self.items) - 1 else last) for at in range(len(self.items))
        ]
        r.usage = ResponseUsage.of(usage([self.gen]))


async def _events(run: ResponseRun, deltas: AsyncIterator[Delta]) -> AsyncIterator[str]:
    """OpenAI's event sequence: the response opened; each output item opened as the reply reaches
    it, its text or arguments streamed, closed when the next begins; the response closed."""
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> str:
        return sse(ResponseEvent(type=kind, sequence_number=next(numbers), **fields), event=kind)

    def opened(at: int) -> Iterator[str]:
        yield event("response.output_item.added", output_index=at, item=run.item(at, "in_progress"))
        if run.items[at].call is None:
            yield event("response.content_part.added", **text_at(at), part=OutputText(text=""))

    def closed(at: int, item: OutputItem) -> Iterator[str]:
        if isinstance(item, OutputMessage):
            text = item.content[0]
            yield event("response.output_text.done", **text_at(at), text=text.text, logprobs=text.logprobs)
            yield event("response.content_part.done", **text_at(at), part=item.content[0])
        else:
            where = {"item_id": item.id, "output_index": at}
            yield event("response.function_call_arguments.done", **where, arguments=item.arguments)
        yield event("response.output_item.done", output_index=at, item=item)

    def text_at(at: int) -> dict[str, Any]:
        return {"item_id": run.items[at].id, "output_index": at, "content_index": 0}

    def new_items() -> Iterator[str]:
        """Open the items the reply reached, closing each one before."""
        for at in range(num_open, len(run.items)):
            if at:
                yield from closed(at - 1, run.item(at - 1, "completed"))
            yield from opened(at)

    yield event("response.created", response=run.response)
    yield event("response.in_progress", response=run.response)
    num_open = 0  # items whose added event went out; the last of them is still open
    try:
        async with aclosing(deltas):
            async for d in deltas:
                for e in new_items():
                    yield e
                num_open = len(run.items)
                if d.text:
                    last_message = max(i for i, item in enumerate(run.items) if item.call is None)
                    given = run.items[last_message].logprobs  # this delta's text's are its last ones
                    logprobs = given[len(given) - len(d.logprobs or ()) :]
                    yield event(
                        "response.output_text.delta", **text_at(last_message), delta=d.text, logprobs=logprobs
                    )
                for call in d.tool_calls:
                    if call.arguments:
                        at = run.at(call.index)
                        where = {"item_id": run.items[at].id, "output_index": at}
                        yield event("response.function_call_arguments.delta", **where, delta=call.arguments)
    except OpenAIError:
        yield event("response.failed", response=run.response)
        return
    for e in new_items():  # an empty reply's message
        yield e
    output = run.response.output
    for e in closed(len(output) - 1, output[-1]):
        yield e
    yield event(FINAL_EVENTS[run.response.status], response=run.response)


def _function_call_id(call_id: str) -> str:
    """A function call item's id, from its call's."""
    return f"fc_{call_id.removeprefix('call_')}"


def _echo(choice: str | BaseModel | None) -> str | dict[str, Any]:
    """The request's tool_choice as the response shows it."""
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


async def _truncated(
    ctx: ServerContext,
    system: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    tools: ToolRequest | None,
    params: SamplingParams,
    prompt_ids: list[int],
) -> list[int]:
    """truncation "auto", as at OpenAI: the conversation's oldest turns dropped until the prompt leaves
    room for the reply, never the instructions or the last user turn and what follows it. Whole turns,
    from a user message on, so that a tool's result never loses its call; the cut is found by bisection
    (a prompt shrinks as turns go)."""
    ready = ctx.engine.ready
    assert ready is not None
    room = ready.max_model_len - (params.max_tokens or 1)
    turns = [i for i, m in enumerate(messages) if m["role"] == "user" and i > 0]  # where a cut may fall
    if len(prompt_ids) <= room or not turns:
        return prompt_ids
    low, high, fitting = 0, len(turns) - 1, None  # turns[low:high + 1] are the cuts still in question
    while low <= high:
        mid = (low + high) // 2
        ids = await ctx.encode_chat(system + messages[turns[mid] :], tools, param="input")
        if len(ids) <= room:
            fitting, high = ids, mid - 1
        else:
            low = mid + 1
    if fitting is not None:
        return fitting
    # the last turn alone: refused as too long
    return await ctx.encode_chat(system + messages[turns[-1] :], tools, param="input", must_fit=True)


def _earlier_turns(request: Request, previous_id: str | None) -> list[dict[str, str]]:
    """The conversation a response continues: earlier input and output (earlier instructions are not kept)."""
    if previous_id is None:
        return []
    previous = server_context(request).responses.get(previous_id)
    if previous is None or previous.owner != _caller(request):
        raise OpenAIError(
            404,
            f"Previous response with id '{previous_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if previous.response.status == "in_progress":
        raise bad_request(
            f"Previous response with id '{previous_id}' is still in progress.", param="previous_response_id"
        )
    return previous.conversation()


def _included(request: Request, stored: StoredResponse | None) -> bool:
    """Whether a GET asks (`include`) for a retrieved response's output logprobs, as at OpenAI the only
    way to have them there. Only a response made with them has them (`stored`; None for input items,
    which have none of the fields `include` names): anything else asked for is a 400."""
    asked = set(request.query_params.getlist("include") + request.query_params.getlist("include[]"))
    if not asked:
        return False
    if stored is not None and asked == {LOGPROBS_INCLUDED} and _has_logprobs(stored):
        return True
    names = ", ".join(sorted(asked))
    if stored is None:
        raise bad_request(f"include: input items have none of {names}", param="include")
    raise bad_request(f"include: {names} was not asked for when this response was made", param="include")


def _has_logprobs(stored: StoredResponse) -> bool:
    """Whether the response was made with its output text's logprobs (text without them was not)."""
    messages = (item for item in stored.response.output if item.type == "message")
    return all(part.logprobs or not part.text for item in messages for part in item.content)


def _without_logprobs(response: ResponseObject) -> ResponseObject:
    """The response as a GET without `include` gives it: its output text without logprobs."""

    def bare(item: OutputItem) -> OutputItem:
        if item.type != "message":
            return item
        return item.model_copy(
            update={"content": [part.model_copy(update={"logprobs": []}) for part in item.content]}
        )

    return response.model_copy(update={"output": [bare(item) for item in response.output]})


def _stored(request: Request, response_id: str) -> StoredResponse:
    """A stored response of the caller's key (another key's is as good as absent)."""
    stored = server_context(request).responses.get(response_id)
    if stored is None or stored.owner != _caller(request):
        raise OpenAIError(404, f"Response with id '{response_id}' not found.")
    return stored


def _caller(request: Request) -> str | None:
    """The name of the API key the request came with (None where the server has no keys)."""
    return getattr(request.scope.get("state", {}).get("api_key"), "name", None)
