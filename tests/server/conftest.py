"""A real `pyinfer serve` on loopback with the embedded SmolLM2, shared by the server tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.server.helpers import ServerProcess, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, "--num-kv-blocks", "512", "--cors-origins", "http://ui.example") as srv:
        yield srv


@pytest.fixture(scope="session")
def model(server) -> str:
    return httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c
