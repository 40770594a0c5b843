"""An error no handler knows, on a real uvicorn on loopback with the server's error handling: a 500 in
OpenAI's shape that carries the request id, and the client's keep-alive connection serves its next request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pyinfer.server.errors import install_error_handlers
from pyinfer.server.middleware import InternalErrorMiddleware, RequestContextMiddleware
from tests.server.helpers import free_port


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = FastAPI()
    install_error_handlers(app, app.routes)  # the list the routes below join

    @app.get("/fails")
    async def fails() -> dict:
        raise RuntimeError("a defect")

    @app.get("/works")
    async def works() -> dict:
        return {"ok": True}

    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RequestContextMiddleware, routes=app.routes)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_an_unexpected_error_is_a_500_in_openai_s_shape_and_the_connection_stays_open(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as http:
        failed = http.get("/fails")
        assert failed.status_code == 500 and "X-Request-Id" in failed.headers
        error = failed.json()["error"]
        assert error["type"] == "server_error" and error["message"] == "internal server error: RuntimeError"
        worked = http.get("/works")
        assert worked.json() == {"ok": True}
        local = [r.extensions["network_stream"].get_extra_info("client_addr") for r in (failed, worked)]
        assert local[0] == local[1]  # the same connection
