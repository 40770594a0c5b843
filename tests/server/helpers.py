"""Helpers for driving a real `pyinfer serve` subprocess."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`pyinfer serve` in a subprocess, its log in a file."""

    def __init__(self, log_path: Path, *flags: str):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "pyinfer", "serve", "--dtype", "float32", "--device", "cpu"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT)

    def wait_http(self, timeout: float = 60) -> None:
        """Until the HTTP server answers (the model may still be loading)."""
        self._wait_for("/health", timeout)

    def wait_ready(self, timeout: float = 180) -> None:
        self._wait_for("/ready", timeout)

    def _wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{path} not answering in {timeout}s:\n{self.log()[-3000:]}")

    def engine_process(self) -> psutil.Process:
        (child,) = psutil.Process(self.proc.pid).children()
        return child

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running_server(log_path: Path, *flags: str) -> Iterator[ServerProcess]:
    """A server ready to serve, stopped on the way out."""
    srv = ServerProcess(log_path, *flags)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@contextmanager
def all_stopped(procs: dict[str, ServerProcess]) -> Iterator[dict[str, ServerProcess]]:
    """Servers started together (their loading overlaps), each stopped on the way out."""
    try:
        yield procs
    finally:
        for srv in procs.values():
            srv.stop()


def engine_stats(http: httpx.Client) -> dict:
    r = http.get("/v1/engine/stats")
    assert r.status_code == 200, r.text
    return r.json()


def engine_idle(http: httpx.Client) -> bool:
    """No request running or waiting, and every KV block free again."""
    s = engine_stats(http)
    return (
        s["num_requests_running"] == 0
        and s["num_requests_waiting"] == 0
        and s["kv_cache_free_blocks"] == s["kv_cache_blocks"]
    )


def posted_in_background(http: httpx.Client, path: str, body: dict) -> Callable[[], httpx.Response]:
    """POSTs on a thread now; the returned call waits for (at most 30 s) and gives the response."""
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.update(r=http.post(path, json=body)))
    thread.start()

    def response() -> httpx.Response:
        thread.join(30)
        return result["r"]

    return response


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Polls until predicate() is truthy; returns its value or fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


def assert_error(r, status: int, param: str | None = None, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param, error
    assert contains in error["message"], error
    return error


def family(srv: ServerProcess) -> list[psutil.Process]:
    """Every process below the server's: its engine core, API processes and tensor-parallel ranks."""
    return psutil.Process(srv.proc.pid).children(recursive=True)


def assert_a_client_that_leaves_frees_its_blocks(srv: ServerProcess) -> None:
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    body = {"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()  # kept: a dropped iterator closes the stream
        assert next(lines).startswith("data: ")
        assert engine_stats(http)["num_requests_running"] == 1
    wait_until(lambda: engine_idle(http), timeout=10)


def assert_sigterm_to_every_process_drains_and_exits_0(srv: ServerProcess, max_tokens: int) -> None:
    """SIGTERM to every process, as systemd's stop does, while a stream runs: it ends whole, the server
    exits 0 and no process is left."""
    children = family(srv)
    body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        for proc in [srv.proc, *children]:  # each drains or waits
            proc.send_signal(signal.SIGTERM)
        events = [line for line in lines if line]
    finishes = [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-1]]
    assert finishes[-1] == "length" and events[-1] == "data: [DONE]"
    assert srv.proc.wait(60) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def assert_a_death_fails_requests_and_every_process_exits(
    srv: ServerProcess, victim: Callable[[], psutil.Process], timeout: float
) -> None:
    """`victim()` killed while a request runs: the request fails as `engine_dead`, and the server exits
    non-zero within `timeout` seconds leaving no process."""
    children = family(srv)
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}
    response = posted_in_background(http, "/v1/completions", body)
    wait_until(lambda: engine_stats(http)["num_requests_running"] == 1, timeout=10)
    victim().kill()
    r = response()
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_dead"
    assert srv.proc.wait(timeout) != 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
