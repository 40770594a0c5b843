"""POST /v1/chat/completions, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pyinfer.server.context import server_context
from pyinfer.server.generation import Delta, Generation, run_all, usage
from pyinfer.server.logprobs import chat_logprobs
from pyinfer.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionChunkWithUsage,
    ChatCompletionRequest,
    ChatDelta,
)
from pyinfer.server.protocol_tools import FunctionCallDelta, ToolCallChunk, check_tool_results
from pyinfer.server.routes.common import (
    DONE,
    TextChunks,
    drain,
    event_stream,
    json_body,
    json_response,
    primed,
    reply_head,
    sse,
    until_disconnected,
)
from pyinfer.server.tool_parser import ToolCallDelta
from pyinfer.tokenizer import Tokenizer

router = APIRouter()
ChatBody = Annotated[ChatCompletionRequest, Depends(json_body(ChatCompletionRequest))]


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(request: Request, body: ChatBody) -> Response:
    ctx = server_context(request)
    params, tokenizer, tools = ctx.admit(request, body)
    messages = [m.template_dict() for m in body.messages]
    check_tool_results(messages, "messages")
    prompt_ids = await ctx.encode_chat(messages, tools, options=body.template_options(), must_fit=True)
    ctx.check_prompt(prompt_ids, params, body, param="messages")
    head = reply_head("chatcmpl", ctx.model_name)
    gen = ctx.generation(request, tokenizer, head["id"], prompt_ids, params, tools)
    calls_only = tools is not None and tools.mode in ("required", "named")  # no content, as at OpenAI
    if body.stream:
        deltas = run_all([gen])
        if ctx.refusable_late(params):
            deltas = await primed(request, deltas)
        return event_stream(_chunks(gen, deltas, head, tokenizer, body.include_usage, calls_only))
    await until_disconnected(request, drain(run_all([gen])))
    choices = [
        ChatChoice(
            index=c.index,
            message=AssistantMessage(
                content=(c.text or None) if (c.tool_calls or calls_only) else c.text, tool_calls=c.tool_calls
            ),
            logprobs=chat_logprobs(tokenizer, c.logprobs or []) if params.logprobs is not None else None,
            finish_reason=c.finish_reason,
        )
        for c in gen.choices
    ]
    return json_response(ChatCompletion(**head, choices=choices, usage=usage([gen])))


async def _chunks(
    gen: Generation,
    deltas: AsyncIterator[Delta],
    head: dict[str, Any],
    tokenizer: Tokenizer,
    include_usage: bool,
    calls_only: bool,  # the reply is tool calls: the role chunk carries no content
) -> AsyncIterator[str]:
    """Role chunks with the first output, then one chunk per delta as tokens are sampled, usage, [DONE]."""
    Chunk = ChatCompletionChunkWithUsage if include_usage else ChatCompletionChunk
    plain = TextChunks(Chunk(**head, choices=[]), _text_choice)

    def event(d: Delta) -> str | bytes:
        if not d.logprobs and not d.tool_calls:
            return plain.event(d.index, d.text or None, d.finish_reason)
        choice = ChatChunkChoice(
            index=d.index,
            delta=ChatDelta(content=d.text or None, tool_calls=[_chunk(t) for t in d.tool_calls] or None),
            logprobs=chat_logprobs(tokenizer, d.logprobs) if d.logprobs else None,
            finish_reason=d.finish_reason,
        )
        return sse(Chunk(**head, choices=[choice]))

    async with aclosing(deltas):
        # not before: a client timing its first chunk times the first token, not the queue (as OpenAI's).
        # An error before it (the drain's end, a timeout) is the stream's only event, its status long sent.
        first = await anext(deltas, None)
        for i in range(gen.params.n):
            role = ChatDelta(role="assistant", content=None if calls_only else "")
            yield sse(Chunk(**head, choices=[ChatChunkChoice(index=i, delta=role)]))
        if first is not None:
            yield event(first)
        async for d in deltas:
            yield event(d)
    if include_usage:
        yield sse(Chunk(**head, choices=[], usage=usage([gen])))
    yield DONE


def _text_choice(index: int, text: str | None, finish_reason: str | None) -> dict[str, Any]:
    """A ChatChunkChoice with no logprobs or tool calls, as the model dumps it."""
    delta = {} if text is None else {"content": text}
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _chunk(delta: ToolCallDelta) -> ToolCallChunk:
    """A call's first piece names it; the others carry arguments."""
    if delta.name is None:
        return ToolCallChunk(index=delta.index, function=FunctionCallDelta(arguments=delta.arguments))
    return ToolCallChunk(
        index=delta.index,
        id=delta.id,
        type="function",
        function=FunctionCallDelta(name=delta.name, arguments=delta.arguments),
    )
