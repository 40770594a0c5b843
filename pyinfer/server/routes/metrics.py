"""GET /v1/metrics (the machine), /v1/engine/stats (the engine's queues and caches) and /metrics
(Prometheus)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from pyinfer.server.context import server_context

router = APIRouter()

# Seconds to wait for the engine core's answer, which comes between steps, before the last one is shown:
# a scrape must not outwait Prometheus' timeout (10 s by default) behind a long step; the stats page
# waits longer for an answer of now.
SCRAPE_PATIENCE = 1.0
STATS_PATIENCE = 30.0


@router.get("/v1/metrics")
async def system_metrics(request: Request) -> dict[str, Any]:
    """CPU, memory and GPU use (gpu is null without one)."""
    return await asyncio.to_thread(request.app.state.system_metrics.snapshot)


@router.get("/v1/engine/stats")
async def engine_stats(request: Request) -> dict[str, Any]:
    """Running and waiting requests, KV-cache blocks and prefix-cache hits, requests in flight here."""
    ctx = server_context(request)
    ctx.require_ready()
    stats = await ctx.stats(STATS_PATIENCE)
    return {**stats, "num_requests_in_flight": ctx.engine.num_requests, "timestamp": time.time()}


@router.get("/metrics", response_model=None)
@router.head("/metrics", response_model=None, include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus' text format; the engine's figures are read from it now, or its last answer where a
    step holds this one back (absent while it loads)."""
    ctx = server_context(request)
    engine = None
    if ctx.ready and (ready := ctx.engine.ready) is not None:
        stats = await ctx.stats(SCRAPE_PATIENCE)
        engine = ctx.metrics.engine_collector(stats, ready.block_size, ready.num_kv_blocks)
    return Response(ctx.metrics.exposition(engine), media_type=CONTENT_TYPE_LATEST)
