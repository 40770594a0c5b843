"""Helpers for driving a real `pyinfer serve` subprocess."""

from __future__ import annotations

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
