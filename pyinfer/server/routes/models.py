"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pyinfer.server.context import server_context
from pyinfer.server.protocol import ModelCard, ModelList
from pyinfer.server.routes.common import json_response

router = APIRouter()


@router.get("/v1/models", response_model=None)
async def list_models(request: Request) -> Response:
    ctx = server_context(request)
    ctx.require_ready()
    assert ctx.engine.ready is not None
    card = ModelCard(
        id=ctx.model_name,
        created=ctx.created,
        root=ctx.model_path,
        max_model_len=ctx.engine.ready.max_model_len,
        sampling_defaults=ctx.request_defaults,
    )
    return json_response(ModelList(data=[card]))
