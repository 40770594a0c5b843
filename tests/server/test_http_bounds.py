"""Bounds on what a client may make the server hold before any key is checked: a request head past
64 KiB is a 431, whole or not; a head not whole within `--read-timeout` of its first byte (or of the
connection's opening), or a body whose next bytes do not come within it, is a 408. Either closes its
connection only, is logged and counted, and the server goes on serving. A body sent slowly but steadily
is served, and an answer longer than the timeout keeps its keep-alive connection."""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import time

import httpx
import pytest

from tests.server.helpers import ServerProcess, running_server, wait_until

READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    log = tmp_path_factory.mktemp("http_bounds") / "server.log"
    with running_server(log, "--num-kv-blocks", "64", "--read-timeout", str(READ_TIMEOUT_S)) as srv:
        yield srv


def connect(srv: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=READ_TIMEOUT_S * 5)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_error(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def refusals(srv: ServerProcess, status: int) -> float:
    """How many requests /metrics counts refused with `status`, on any route."""
    text = httpx.get(f"{srv.base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pyinfer:http_requests_total{") and f'status="{status}"' in line
    )


def access_line(srv: ServerProcess, request_id: str) -> str:
    """The one access-log line of the request with `request_id`, once it is written."""
    wait_until(lambda: f"request_id={request_id}" in srv.log(), timeout=10)
    (line,) = [line for line in srv.log().splitlines() if f"request_id={request_id}" in line]
    return line


def serves(srv: ServerProcess) -> bool:
    return httpx.get(f"{srv.base_url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("ended", [False, True], ids=["never-ended", "whole-in-one-write"])
def test_a_head_past_64_kib_is_a_431_and_closes_only_its_connection(server, ended):
    before = refusals(server, 431)
    big = b"a" * (65 * 1024 if ended else 1 << 20)
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + big + (b"\r\n\r\n" if ended else b""))
        status, error = status_and_error(read_all(sock))
    assert status == 431 and "64 KiB" in error["message"] and error["type"] == "invalid_request_error"
    assert serves(server) and refusals(server, 431) == before + 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nNo colon\r\n\r\n",
    ],
    ids=["no-request-line", "unknown-method", "header-without-colon"],
)
def test_bytes_that_are_not_http_get_an_openai_400_counted_as_unmatched(server, garbage):
    before = refusals(server, 400)
    with connect(server) as sock:
        sock.sendall(garbage)
        status, error = status_and_error(read_all(sock))
    assert status == 400 and error["message"] == "the request is not valid HTTP"
    assert serves(server) and refusals(server, 400) == before + 1
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'pyinfer:http_requests_total{method="other",route="unmatched",status="400"}' in text


def test_a_head_under_the_bound_is_served(server):
    with connect(server) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
        )
        assert read_all(sock).startswith(b"HTTP/1.1 200")


def trickled_head(sock: socket.socket) -> None:
    """A head sent a byte every half timeout (each gap short, the whole longer than the timeout), until
    the server answers."""
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n":
        sock.sendall(bytes([byte]))
        if select.select([sock], [], [], READ_TIMEOUT_S / 2)[0]:
            return


@pytest.mark.parametrize(
    "begin",
    [
        lambda sock: None,  # a connection that sends nothing
        lambda sock: sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n"),  # a head never ended
        trickled_head,
    ],
    ids=["silent", "head", "trickled-head"],
)
def test_a_head_not_whole_within_the_read_timeout_is_a_408(server, begin):
    before = refusals(server, 408)
    with connect(server) as sock:
        start = time.monotonic()
        begin(sock)
        status, error = status_and_error(read_all(sock))
        waited = time.monotonic() - start
    assert status == 408 and error["type"] == "invalid_request_error"
    assert READ_TIMEOUT_S <= waited < READ_TIMEOUT_S + 3
    assert serves(server) and refusals(server, 408) == before + 1


def test_a_body_that_stops_arriving_is_a_408_logged_and_counted_as_one(server):
    before = refusals(server, 408)
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'X-Request-Id: stalled-body\r\nContent-Length: 1000\r\n\r\n{"model":'
        )
        status, _ = status_and_error(read_all(sock))
    assert status == 408
    assert "POST /v1/completions 408" in access_line(server, "stalled-body")
    assert "internal error" not in server.log()
    assert serves(server) and refusals(server, 408) == before + 1


def test_a_body_sent_slowly_but_steadily_is_served(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 2, "temperature": 0}).encode()
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    with connect(server) as sock:
        sock.sendall(head)
        for i in range(0, len(body), len(body) // 4 + 1):  # the whole body takes twice the timeout
            time.sleep(READ_TIMEOUT_S / 2)
            sock.sendall(body[i : i + len(body) // 4 + 1])
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b'"text"' in reply


def tokens_lasting(server: ServerProcess, seconds: float) -> int:
    """A max_tokens whose answer takes about `seconds` on this machine, from a 16-token answer's time."""
    body = {"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": True}
    start = time.monotonic()
    assert httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60).status_code == 200
    return max(16, int(16 * seconds / (time.monotonic() - start)))


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_longer_than_the_timeout_keeps_its_connection(server, stream):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    tokens = tokens_lasting(server, 3 * READ_TIMEOUT_S)
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": True, "stream": stream}
    start = time.monotonic()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    first = conn.getresponse()
    text = first.read()
    assert first.status == 200 and time.monotonic() - start > READ_TIMEOUT_S
    assert (b"data: [DONE]" in text) if stream else json.loads(text)["usage"]["completion_tokens"] == tokens
    port = conn.sock.getsockname()[1]
    conn.request("GET", "/health")
    second = conn.getresponse()
    assert (
        second.status == 200 and second.read() and conn.sock.getsockname()[1] == port
    )  # the same connection
    conn.close()


def test_a_pipelined_refusal_waits_for_the_answer_before_it(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 64, "ignore_eos": True, "stream": True}).encode()
    streamed = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    streamed += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with connect(server) as sock:
        sock.sendall(streamed)
        sock.recv(1)  # its answer has begun
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n")
        reply = read_all(sock)
    answer, _, refusal = reply.partition(b"data: [DONE]\n\n")
    assert answer.count(b'"text"') == 64 and b"431" not in answer  # the stream whole, nothing inside it
    assert refusal.startswith(b"\r\n0\r\n\r\nHTTP/1.1 431 ")  # its last chunk, then the refusal


def test_a_refusal_after_two_pipelined_requests_waits_for_both_answers(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 32, "ignore_eos": True}).encode()
    first = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    first += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with connect(server) as sock:
        sock.sendall(first + b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n" + b"GARBAGE\r\n\r\n")
        reply = read_all(sock)
    # each answer's head follows the body before it on the same line
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]
    assert statuses == [200, 200, 400] and b'"version"' in reply


def test_bytes_that_are_not_http_inside_a_body_are_a_400_logged_and_counted_as_one(server):
    before = refusals(server, 400)
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'X-Request-Id: bad-chunk\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"mod\r\nZZ\r\n'
        )
        status, error = status_and_error(read_all(sock))
    assert status == 400 and error["message"] == "the request is not valid HTTP"
    assert "POST /v1/completions 400" in access_line(server, "bad-chunk")
    assert serves(server) and refusals(server, 400) == before + 1
