"""One real `pyinfer serve` on loopback for the load, fault and bad-input tests, and a tally of what they
did (requests served, faults injected, bad inputs tried, 5xx seen, blocks leaked), printed at the end of
the run and written as JSON where PYINFER_RELIABILITY_REPORT names a file."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.server.helpers import ServerProcess, running_server

TALLY: Counter[str] = Counter()


@pytest.fixture(scope="session")
def tally() -> Counter[str]:
    return TALLY


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY:
        return
    terminalreporter.write_line(f"reliability: {json.dumps(dict(sorted(TALLY.items())))}")
    if path := os.environ.get("PYINFER_RELIABILITY_REPORT"):
        with open(path, "w") as f:
            json.dump(dict(sorted(TALLY.items())), f, indent=2)


@pytest.fixture(scope="session")
def sturdy(tmp_path_factory) -> Iterator[ServerProcess]:
    """A server as an operator would run it: a bounded context and batch, plenty of KV blocks."""
    log = tmp_path_factory.mktemp("reliability") / "server.log"
    flags = ("--num-kv-blocks", "1024", "--max-model-len", "1024", "--max-num-seqs", "64")
    with running_server(log, *flags) as srv:
        yield srv


@pytest.fixture(scope="session")
def sturdy_http(sturdy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sturdy.base_url, timeout=120) as c:
        yield c
