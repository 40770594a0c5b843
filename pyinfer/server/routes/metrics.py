"""GET /v1/metrics (the machine) and /v1/engine/stats (the engine's queues and caches)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from pyinfer.server.context import server_context

router = APIRouter()


@router.get("/v1/metrics")
async def system_metrics(request: Request) -> dict[str, Any]:
    """CPU, memory and GPU use (gpu is null without one)."""
    return await asyncio.to_thread(request.app.state.system_metrics.snapshot)


@router.get("/v1/engine/stats")
async def engine_stats(request: Request) -> dict[str, Any]:
    """Running and waiting requests, KV-cache blocks and prefix-cache hits, requests in flight here."""
    ctx = server_context(request)
    ctx.require_ready()
    stats = await ctx.engine.stats()
    return {
        **stats,
        "num_requests_in_flight": ctx.engine.num_requests,
        "num_tool_call_parse_failures": ctx.num_tool_call_failures,
        "timestamp": time.time(),
    }
