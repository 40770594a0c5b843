"""Liveness, readiness and version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pyinfer import __version__
from pyinfer.server.context import server_context

router = APIRouter()


# HEAD too, as some load balancers' and uptime checkers' probes send it (left out of the OpenAPI schema,
# where it would repeat GET's operation id)
@router.get("/health", response_model=None)
@router.head("/health", response_model=None, include_in_schema=False)
async def health(request: Request) -> JSONResponse:
    """200 while the process answers and its engine is not dead or hung (loading is healthy: see /ready
    for whether it serves); a liveness probe restarts the server on a 503."""
    ctx = server_context(request)
    if ctx.engine.dead:
        return JSONResponse({"status": "engine_dead", "service": "pyinfer"}, status_code=503)
    if (silent := ctx.engine_hung_for()) is not None:
        return JSONResponse(hung(silent) | {"service": "pyinfer"}, status_code=503)
    return JSONResponse({"status": "healthy", "service": "pyinfer"})


@router.get("/ready", response_model=None)
@router.head("/ready", response_model=None, include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """200 once the model is loaded and the engine answers; 503 while loading, draining, dead or hung."""
    ctx = server_context(request)
    if (silent := ctx.engine_hung_for()) is not None:
        return JSONResponse(hung(silent) | {"model_loaded": True}, status_code=503)
    if ctx.ready and not ctx.draining:
        return JSONResponse({"status": "ready", "model_loaded": True})
    status = "engine_dead" if ctx.engine.dead else "draining" if ctx.draining else "loading"
    return JSONResponse({"status": status, "model_loaded": ctx.ready}, status_code=503)


def hung(silent: float) -> dict[str, str]:
    return {"status": "engine_hung", "detail": f"the engine has not answered for {silent:.0f} s"}


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}
