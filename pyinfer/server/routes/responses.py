"""The Responses API: POST /v1/responses, whole or streamed; GET, DELETE and cancel of stored responses."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pyinfer.server.context import server_context
from pyinfer.server.errors import OpenAIError, bad_request, from_exception
from pyinfer.server.generation import Delta, Generation, usage
from pyinfer.server.protocol_responses import (
    IncompleteDetails,
    OutputMessage,
    OutputText,
    ResponseDeleted,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
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
    params, tokenizer = ctx.admit(body)
    messages = _earlier_turns(ctx.responses, body.previous_response_id) + body.messages()
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    prompt_ids = await ctx.encode_chat(system + messages)
    ctx.check_prompt(prompt_ids, params, param="input")
    response = ResponseObject(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="in_progress",
        model=ctx.model_name,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        metadata=body.metadata or {},
        previous_response_id=body.previous_response_id,
        store=body.store,
        temperature=params.temperature,
        top_p=params.top_p,
        user=body.user,
    )
    gen = Generation(ctx.engine, tokenizer, response.id, prompt_ids, params)
    run = ResponseRun(StoredResponse(response, messages), gen)
    if body.store:
        ctx.responses.put(run.stored)
    if body.stream:
        deltas = run.deltas()
        if params.structured is not None:
            deltas = await primed(request, deltas)
        return event_stream(_events(run, deltas))
    await until_disconnected(request, drain(run.deltas()))
    return json_response(response)


@router.get("/v1/responses/{response_id}", response_model=None)
async def retrieve_response(request: Request, response_id: str) -> Response:
    return json_response(_stored(request, response_id).response)


@router.delete("/v1/responses/{response_id}", response_model=None)
async def delete_response(request: Request, response_id: str) -> Response:
    if server_context(request).responses.delete(response_id) is None:
        raise _not_found(response_id)
    return json_response(ResponseDeleted(id=response_id))


@router.post("/v1/responses/{response_id}/cancel", response_model=None)
async def cancel_response(request: Request, response_id: str) -> Response:
    """Stop a response still running, whichever connection waits for it; cancelling twice is harmless."""
    stored = _stored(request, response_id)
    response = stored.response
    if response.status == "in_progress" and stored.stop is not None:
        response.status = "cancelled"
        stored.stop()
    elif response.status != "cancelled":
        raise bad_request(f"Cannot cancel a response that has finished (status {response.status}).")
    return json_response(response)


class ResponseRun:
    """One response being generated; its stored record is final once its deltas end, however they end."""

    def __init__(self, stored: StoredResponse, gen: Generation):
        self.stored = stored
        self.response = stored.response
        self.gen = gen
        self.message_id = f"msg_{uuid.uuid4().hex}"
        stored.stop = lambda: gen.engine.abort(gen.request_id)

    async def deltas(self) -> AsyncIterator[Delta]:
        """The generation's deltas; an error comes out as the OpenAIError the response records."""
        failure = None
        try:
            if self.response.status == "in_progress":  # not cancelled before it began
                async with aclosing(self.gen.run()) as deltas:
                    async for delta in deltas:
                        yield delta
        except Exception as e:
            failure = from_exception(e)
            raise failure from None
        finally:
            self._finish(failure)

    def message(self, status: Literal["in_progress", "completed", "incomplete"]) -> OutputMessage:
        """The reply as an output item: empty while in progress (its part is added by its own event)."""
        parts = [] if status == "in_progress" else [OutputText(text=self.gen.choices[0].text)]
        return OutputMessage(id=self.message_id, status=status, content=parts)

    def _finish(self, failure: OpenAIError | None) -> None:
        r = self.response
        finish_reason = self.gen.choices[0].finish_reason
        if r.status == "in_progress":  # else cancelled already
            if failure is not None:
                r.status = "failed"
                r.error = ResponseError(code=failure.detail.code or failure.detail.type, message=str(failure))
            elif finish_reason == "length":
                r.status, r.incomplete_details = "incomplete", IncompleteDetails(reason="max_output_tokens")
            elif finish_reason is None:  # the client went away
                r.status = "cancelled"
            else:
                r.status, r.completed_at = "completed", int(time.time())
        r.output = [self.message("completed" if r.status == "completed" else "incomplete")]
        r.usage = ResponseUsage.of(usage([self.gen]))
        self.stored.stop = None


async def _events(run: ResponseRun, deltas: AsyncIterator[Delta]) -> AsyncIterator[str]:
    """OpenAI's event sequence: the response and its message opened, one delta per token, all closed."""
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> str:
        return sse(ResponseEvent(type=kind, sequence_number=next(numbers), **fields), event=kind)

    at = {"item_id": run.message_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=run.response)
    yield event("response.in_progress", response=run.response)
    yield event("response.output_item.added", output_index=0, item=run.message("in_progress"))
    yield event("response.content_part.added", **at, part=OutputText(text=""))
    try:
        async with aclosing(deltas):
            async for d in deltas:
                if d.text:
                    yield event("response.output_text.delta", **at, delta=d.text, logprobs=[])
    except OpenAIError:
        yield event("response.failed", response=run.response)
        return
    message = run.response.output[0]
    yield event("response.output_text.done", **at, text=message.content[0].text, logprobs=[])
    yield event("response.content_part.done", **at, part=message.content[0])
    yield event("response.output_item.done", output_index=0, item=message)
    yield event(FINAL_EVENTS[run.response.status], response=run.response)


def _earlier_turns(store: ResponseStore, previous_id: str | None) -> list[dict[str, str]]:
    """The conversation a response continues: earlier input and output (earlier instructions are not kept)."""
    if previous_id is None:
        return []
    previous = store.get(previous_id)
    if previous is None:
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


def _stored(request: Request, response_id: str) -> StoredResponse:
    stored = server_context(request).responses.get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored


def _not_found(response_id: str) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.")
