"""Helpers the routes share: strict JSON bodies, SSE, reply ids, cancellation on disconnect."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import msgspec
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from pyinfer.server.errors import ClientDisconnected, OpenAIError, from_exception, from_validation_error
from pyinfer.server.protocol import ErrorResponse

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DONE = "data: [DONE]\n\n"


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that parses the body as `model`; bad JSON or fields are a 400 in OpenAI's shape, and a
    body not declared as JSON a 415: a web page may send any site a text/plain or form POST, or one with
    no type (a bare ArrayBuffer), without asking first, so reading those as JSON would let any page drive
    a server without keys. Only a request from no page (no Origin) may leave the type out."""

    async def parse(request: Request) -> M:
        declared = request.headers.get("content-type")
        if declared is None and "origin" in request.headers:
            raise OpenAIError(415, "the body must be JSON, sent as Content-Type: application/json")
        if declared is not None and not is_json(declared):
            raise OpenAIError(
                415, f"the body must be JSON, sent as Content-Type: application/json, not {declared!r}"
            )
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as e:
            raise from_validation_error(e) from None

    parse.body_model = model  # type: ignore[attr-defined]  # for the OpenAPI document (server/openapi.py)
    return parse


def is_json(content_type: str) -> bool:
    """application/json, or a type of its family (application/merge-patch+json), with any parameters."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def reply_head(prefix: str, model: str) -> dict[str, Any]:
    """id, created and model of a reply and of each of its chunks."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}


def json_response(payload: BaseModel) -> Response:
    return Response(payload.model_dump_json(), media_type="application/json")


def sse(payload: BaseModel, event: str | None = None) -> str:
    """One server-sent event; `event` names its type for APIs that name them (Responses)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload.model_dump_json()}\n\n"


class TextChunks:
    """SSE events of one streamed reply's plain-text chunks (one choice's text and finish reason, no
    logprobs or tool calls: nearly every token of every stream). The reply's own fields are encoded
    once, from the model, and each choice is spliced in: building and dumping the pydantic models cost
    more than the rest of a token's way through the server. The JSON is the models' own (tested)."""

    def __init__(self, empty: BaseModel, choice: Callable[[int, str | None, str | None], dict[str, Any]]):
        before, after = empty.model_dump_json().split('"choices":[]', 1)
        self.prefix = f'data: {before}"choices":['.encode()
        self.suffix = f"]{after}\n\n".encode()
        self.choice = choice  # (index, text, finish_reason) -> the choice as the model dumps it

    def event(self, index: int, text: str | None, finish_reason: str | None) -> bytes:
        return self.prefix + msgspec.json.encode(self.choice(index, text, finish_reason)) + self.suffix


def event_stream(events: AsyncIterator[str | bytes]) -> StreamingResponse:
    """An SSE reply; an error after it began is sent as an error event, then [DONE]."""

    async def guarded() -> AsyncIterator[str | bytes]:
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        except Exception as e:
            yield sse(ErrorResponse(error=from_exception(e).detail))
            yield DONE

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(guarded(), media_type="text/event-stream", headers=headers)


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its engine request) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


async def primed(request: Request, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items` with its first item awaited now: an error before it (a constraint the engine could not
    compile, a shed from a full queue) becomes the reply's 400 or 503, not an error event inside a stream
    that has begun."""
    try:
        first = await until_disconnected(request, anext(items))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await items.aclose()
        raise

    async def chained() -> AsyncIterator[T]:
        async with aclosing(items):
            if first is None:
                return
            yield first
            async for item in items:
                yield item

    return chained()


async def drain(deltas: AsyncIterator[Any]) -> None:
    async with aclosing(deltas):
        async for _ in deltas:
            pass
