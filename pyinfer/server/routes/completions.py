"""POST /v1/completions (the legacy text API), whole or streamed; one or many prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pyinfer.sampling_params import SamplingParamsError
from pyinfer.server.context import server_context
from pyinfer.server.generation import Delta, Generation, run_all, usage
from pyinfer.server.logprobs import completion_logprobs
from pyinfer.server.protocol import Completion, CompletionChoice, CompletionChunkWithUsage, CompletionRequest
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
from pyinfer.tokenizer import Tokenizer

router = APIRouter()
CompletionBody = Annotated[CompletionRequest, Depends(json_body(CompletionRequest))]


@router.post("/v1/completions", response_model=None)
async def create_completion(request: Request, body: CompletionBody) -> Response:
    ctx = server_context(request)
    params, tokenizer, _ = ctx.admit(request, body)
    prompts = body.prompts()
    if not prompts:
        raise SamplingParamsError("prompt", "must not be empty")
    for text in (p for p in prompts if isinstance(p, str)):
        ctx.refuse_unfittable(len(text), "prompt")
    prompt_ids = [p if isinstance(p, list) else await ctx.encode(p) for p in prompts]
    for ids in prompt_ids:
        ctx.check_prompt(ids, params, body)
    head = reply_head("cmpl", ctx.model_name)
    request_ids = [f"{head['id']}-{i}" for i in range(len(prompt_ids))]
    gens = ctx.generations(request, tokenizer, request_ids, prompt_ids, params)
    echoes = [(p if isinstance(p, str) else tokenizer.decode(p)) if body.echo else "" for p in prompts]
    if body.stream:
        deltas = run_all(gens)
        if ctx.refusable_late(params):
            deltas = await primed(request, deltas)
        return event_stream(
            _chunks(gens, deltas, echoes, head, tokenizer, body.include_usage, params.skip_special_tokens)
        )
    await until_disconnected(request, drain(run_all(gens)))
    choices = [
        CompletionChoice(
            index=gen.index_offset + c.index,
            text=echo + c.text,
            logprobs=completion_logprobs(tokenizer, c.logprobs or [], len(echo), params.skip_special_tokens)[
                0
            ]
            if params.logprobs is not None
            else None,
            finish_reason=c.finish_reason,
        )
        for gen, echo in zip(gens, echoes, strict=True)
        for c in gen.choices
    ]
    return json_response(Completion(**head, choices=choices, usage=usage(gens)))


async def _chunks(
    gens: list[Generation],
    deltas: AsyncIterator[Delta],
    echoes: list[str],
    head: dict[str, Any],
    tokenizer: Tokenizer,
    include_usage: bool,
    skip_special_tokens: bool,
) -> AsyncIterator[str]:
    """The echoed prompts first, then one chunk per delta as tokens are sampled, usage, [DONE]."""
    # choice index -> where the text of its next logprob token starts (logprobs trail text held back
    # as the possible start of a stop string, so this is not the length of the text sent)
    offsets = {}
    Chunk = CompletionChunkWithUsage if include_usage else Completion
    for gen, echo in zip(gens, echoes, strict=True):
        for c in gen.choices:
            offsets[gen.index_offset + c.index] = len(echo)
            if echo:
                choice = CompletionChoice(index=gen.index_offset + c.index, text=echo, finish_reason=None)
                yield sse(Chunk(**head, choices=[choice]))
    plain = TextChunks(Chunk(**head, choices=[]), _text_choice)
    async with aclosing(deltas):
        async for d in deltas:
            if not d.logprobs:
                yield plain.event(d.index, d.text, d.finish_reason)
                continue
            logprobs, offsets[d.index] = completion_logprobs(
                tokenizer, d.logprobs, offsets[d.index], skip_special_tokens
            )
            choice = CompletionChoice(
                index=d.index, text=d.text, logprobs=logprobs, finish_reason=d.finish_reason
            )
            yield sse(Chunk(**head, choices=[choice]))
    if include_usage:
        yield sse(Chunk(**head, choices=[], usage=usage(gens)))
    yield DONE


def _text_choice(index: int, text: str | None, finish_reason: str | None) -> dict[str, Any]:
    """A CompletionChoice without logprobs, as the model dumps it."""
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
