"""The web UI: `/` and its static files, from pyinfer/server/static (plain files, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"

# Scripts and data only from this server: markdown that slips past the sanitizer still cannot run code
# or send anything elsewhere. Inline styles stay allowed (the chart library sets them).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server never runs an old UI
}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


@router.get("/static/{path:path}")
async def static_file(path: str) -> FileResponse:
    file = (STATIC / path).resolve()
    if not file.is_relative_to(STATIC) or not file.is_file():
        raise HTTPException(404, "Not Found")
    return FileResponse(file, headers=HEADERS)
