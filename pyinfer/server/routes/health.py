"""Liveness, readiness and version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pyinfer import __version__
from pyinfer.server.context import server_context

router = APIRouter()


# HEAD too, as some load balancers' and uptime checkers' probes send it (left out of the OpenAPI schema,
# where it would repeat GET's operation id)
@router.get("/health")
@router.head("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    """The process answers; says nothing about the model (see /ready)."""
    return {"status": "healthy", "service": "pyinfer"}


@router.get("/ready", response_model=None)
@router.head("/ready", response_model=None, include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """200 once the model is loaded and the engine is alive; 503 while loading, draining or dead."""
    ctx = server_context(request)
    if ctx.ready and not ctx.draining:
        return JSONResponse({"status": "ready", "model_loaded": True})
    status = "engine_dead" if ctx.engine.dead else "draining" if ctx.draining else "loading"
    return JSONResponse({"status": status, "model_loaded": ctx.ready}, status_code=503)


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}
