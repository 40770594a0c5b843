"""POST /tokenize and /detokenize with the served model's tokenizer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from pyinfer.server.context import server_context
from pyinfer.server.errors import bad_request
from pyinfer.server.protocol import DetokenizeRequest, TokenizeRequest
from pyinfer.server.routes.common import json_body

router = APIRouter()
TokenizeBody = Annotated[TokenizeRequest, Depends(json_body(TokenizeRequest))]
DetokenizeBody = Annotated[DetokenizeRequest, Depends(json_body(DetokenizeRequest))]


@router.post("/tokenize")
async def tokenize(request: Request, body: TokenizeBody) -> dict[str, Any]:
    """A prompt, or messages through the chat template, to token ids."""
    ctx = server_context(request)
    ctx.check_model(body.model)
    ctx.require_ready()
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("give either prompt or messages", param="prompt")
    if body.tools is not None and body.messages is None:
        raise bad_request(
            "tools need messages: they are given to the model through the chat template", "tools"
        )
    if body.messages is not None:
        messages = [m.template_dict() for m in body.messages]
        tokens = await ctx.encode_chat(messages, body.tool_request(), options=body.template_options())
    else:
        tokens = await ctx.encode(body.prompt or "", body.add_special_tokens)
    assert ctx.engine.ready is not None
    return {"tokens": tokens, "count": len(tokens), "max_model_len": ctx.engine.ready.max_model_len}


@router.post("/detokenize")
async def detokenize(request: Request, body: DetokenizeBody) -> dict[str, str]:
    ctx = server_context(request)
    ctx.check_model(body.model)
    ctx.require_ready()
    assert ctx.engine.ready is not None
    vocab = ctx.engine.ready.vocab_size
    if any(not 0 <= t < vocab for t in body.tokens):
        raise bad_request(f"token ids must be in [0, {vocab})", param="tokens")
    return {"prompt": ctx.require_tokenizer().decode(body.tokens, skip_special_tokens=False)}
