"""GET /v1/models: the one model this server serves; GET /v1/models/{id}: it, by its id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pyinfer.server.context import server_context
from pyinfer.server.protocol import ModelCard, ModelList
from pyinfer.server.routes.common import json_response

router = APIRouter()


@router.get("/v1/models", response_model=None)
async def list_models(request: Request) -> Response:
    return json_response(ModelList(data=[_card(request)]))


@router.get("/v1/models/{model:path}", response_model=None)
async def retrieve_model(request: Request, model: str) -> Response:
    """The model by its id (a 404 for any other), as the openai client's models.retrieve asks."""
    server_context(request).check_model(model)
    return json_response(_card(request))


def _card(request: Request) -> ModelCard:
    ctx = server_context(request)
    ctx.require_ready()
    assert ctx.engine.ready is not None
    return ModelCard(
        id=ctx.model_name,
        created=ctx.created,
        root=ctx.model_path,
        max_model_len=ctx.engine.ready.max_model_len,
        sampling_defaults=ctx.request_defaults,
    )
