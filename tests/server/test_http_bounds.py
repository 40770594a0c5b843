"""Bounds on what a client may make the server hold before any key is checked: a request head past
64 KiB is a 431, a request whose next bytes do not come within `--read-timeout` is a 408; either closes
its connection, and the server goes on serving. A slow client that keeps sending is not cut off."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.server.helpers import ServerProcess, running_server

READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    log = tmp_path_factory.mktemp("http_bounds") / "server.log"
    with running_server(log, "--num-kv-blocks", "64", "--read-timeout", str(READ_TIMEOUT_S)) as srv:
        yield srv


def connect(srv: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=READ_TIMEOUT_S * 5)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_error(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def serves(srv: ServerProcess) -> bool:
    return httpx.get(f"{srv.base_url}/health", timeout=5).status_code == 200


def test_a_head_past_64_kib_is_a_431_and_closes_only_its_connection(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20))  # never ended
        status, error = status_and_error(read_all(sock))
    assert status == 431 and "64 KiB" in error["message"] and error["type"] == "invalid_request_error"
    assert serves(server)


def test_a_head_under_the_bound_is_served(server):
    with connect(server) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
        )
        assert read_all(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "begun",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\n",  # a head never ended
        b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":',
    ],
    ids=["head", "body"],
)
def test_a_request_that_stops_arriving_is_a_408_after_the_read_timeout(server, begun):
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(begun)
        status, error = status_and_error(read_all(sock))
        waited = time.monotonic() - start
    assert status == 408 and error["type"] == "invalid_request_error"
    assert READ_TIMEOUT_S <= waited < READ_TIMEOUT_S + 3
    assert serves(server)


def test_a_slow_client_that_keeps_sending_is_served(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 2, "temperature": 0}).encode()
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    pieces = [request[i : i + len(request) // 4 + 1] for i in range(0, len(request), len(request) // 4 + 1)]
    with connect(server) as sock:
        for piece in pieces:  # the whole takes about twice the read timeout, each gap half of it
            sock.sendall(piece)
            time.sleep(READ_TIMEOUT_S / 2)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b'"text"' in reply
