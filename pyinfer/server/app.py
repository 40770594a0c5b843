"""The FastAPI app: lifespan (engine process up and down), middleware, error handlers, routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from pyinfer import __version__
from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import EngineDeadError, EngineLink, process_exit
from pyinfer.server.auth import ApiKeyMiddleware, ApiKeys
from pyinfer.server.config import ServerConfig
from pyinfer.server.context import ServerContext
from pyinfer.server.errors import install_error_handlers
from pyinfer.server.middleware import (
    BodyLimitMiddleware,
    InternalErrorMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
)
from pyinfer.server.openapi import install_openapi
from pyinfer.server.rate_limits import RATE_LIMIT_HEADERS
from pyinfer.server.routes import ROUTERS
from pyinfer.server.shared_state import IN_MEMORY
from pyinfer.server.system_metrics import SystemMetrics

log = logging.getLogger(__name__)


def create_app(
    config: ServerConfig,
    engine_config: EngineConfig,
    link: EngineLink | None = None,
    launcher_pid: int | None = None,
    shared_state: str = IN_MEMORY,
) -> FastAPI:
    """The app; `link`: one of several API processes, attached to the engine core the launcher (whose
    death stops it too) started, sharing stored responses and rate limits with the others through the
    database `shared_state`."""
    ctx = ServerContext(config, engine_config, link, shared_state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.engine.on_death = lambda: ctx.fail("the engine process died")
        await ctx.engine.start()
        await _load_streaming_backend()
        tasks = [asyncio.create_task(_load(ctx))]
        if await ctx.engine.core_was_ready():
            # one of several API processes, started after the core loaded while the others serve: finish
            # loading before taking a connection, which would otherwise get a 503
            await tasks[0]
        if launcher_pid is not None:  # the launcher gone, nothing would stop us: stop
            tasks.append(asyncio.create_task(_watch_launcher(ctx, launcher_pid)))
        yield  # serving; uvicorn drains in-flight requests before we go on
        for task in tasks:
            task.cancel()
        await ctx.engine.shutdown()
        ctx.shared.close()

    app = FastAPI(title="PyInfer", version=__version__, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.system_metrics = SystemMetrics(_gpu_index(engine_config.device))
    for router in ROUTERS:
        app.include_router(router)
    routes = [route for router in ROUTERS for route in router.routes]
    # and FastAPI's own pages (/docs, /openapi.json), the starlette Routes of the app's router
    served = [*routes, *(r for r in app.router.routes if isinstance(r, Route))]
    install_error_handlers(app, served)
    install_openapi(app, routes)
    # Middleware, innermost first: unexpected errors answered inside everything else, so that they carry its
    # headers; rate limits (which need the key) inside API keys, both inside CORS, so that preflight requests
    # pass without a key and refusals carry CORS headers, and inside the request id, so that they carry one.
    # The body's limit applies before anything reads the body, but only to callers with a key and within
    # their rate limit: the others are refused before their body is read at all.
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=config.max_request_body)
    app.add_middleware(RateLimitMiddleware, limiter=ctx.rate_limits)
    keys = ApiKeys(config.api_keys, config.api_key_file, config.key_name_salt)
    app.add_middleware(ApiKeyMiddleware, keys=keys, protect_metrics=config.protect_metrics)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", *RATE_LIMIT_HEADERS, "x-should-retry"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        routes=served,
        metrics=ctx.metrics,
        log_prompts=config.log_prompts,
        log_format=config.log_format,
    )
    return app


async def _load_streaming_backend() -> None:
    """Starlette streams each response in an anyio task group, and anyio imports its asyncio backend at
    the first one, with the event loop held: each API process's first clients waited for it."""
    async with anyio.create_task_group():
        pass


async def _watch_launcher(ctx: ServerContext, pid: int) -> None:
    await process_exit(pid)
    ctx.fail("the launcher of the API processes is gone")


async def _load(ctx: ServerContext) -> None:
    try:
        await ctx.load()
    except EngineDeadError:
        pass  # the engine client has reported it
    except Exception:
        log.exception("loading failed")
        ctx.fail("loading failed")


def _gpu_index(device: str | None) -> int:
    if device and device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    return 0
