"""Process life (servers started as `python -m pyinfer serve`): SIGTERM drains and exits 0 quietly; engine death fails requests and exits non-zero; no orphans.

Each test runs its own server; all three start together to share the loading time.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from pyinfer.server.config import cuda_device_visible
from tests.server.helpers import (
    ServerProcess,
    all_stopped,
    engine_stats,
    posted_in_background,
    running_server,
    wait_until,
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict[str, ServerProcess]:
    folder = tmp_path_factory.mktemp("lifecycle")
    flags = ("--num-kv-blocks", "64", "--log-format", "json")
    procs = {
        "engine_death": ServerProcess(folder / "engine_death.log", *flags),
        "orphan": ServerProcess(folder / "orphan.log", *flags, "--log-prompts"),
        "sigterm": ServerProcess(folder / "sigterm.log", *flags, "--dtype", "auto"),  # as `make serve`
        "drain_timeout": ServerProcess(
            folder / "drain_timeout.log",
            "--num-kv-blocks",
            "160",
            "--log-format",
            "json",
            "--drain-timeout",
            "1",
        ),
    }
    with all_stopped(procs):
        srv = procs["sigterm"]
        srv.wait_http()  # up, the model still loading: what do clients see?
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        srv.while_loading = [
            httpx.get(f"{srv.base_url}/ready"),
            httpx.post(f"{srv.base_url}/v1/chat/completions", json=body),
        ]
        for srv in procs.values():
            srv.wait_ready()
        yield procs


def test_503_while_loading(servers):
    ready, chat = servers["sigterm"].while_loading
    assert ready.status_code == 503 and ready.json() == {"status": "loading", "model_loaded": False}
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_loading"
    assert int(chat.headers["retry-after"]) > 0  # the openai client waits that long before it tries again


def test_sigterm_drains_in_flight_request_and_exits_0(servers):
    srv = servers["sigterm"]
    engine = srv.engine_process()
    body = {"prompt": "Once upon a time", "max_tokens": 30, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        srv.proc.send_signal(signal.SIGTERM)
        engine.send_signal(signal.SIGTERM)  # as systemd's stop signals every process: the core waits
        events = [line for line in lines if line]
    finishes = [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-1]]
    assert finishes[-1] == "length" and events[-1] == "data: [DONE]"
    assert srv.proc.wait(30) == 0
    assert not engine.is_running()
    with pytest.raises(httpx.TransportError):  # no longer accepting
        httpx.get(f"{srv.base_url}/health", timeout=2)
    (access,) = access_records(srv, "/v1/completions")
    assert access["route"] == "/v1/completions" and access["status"] == 200
    assert access["prompt_tokens"] == 4 and access["completion_tokens"] == 30
    # each record names the process that wrote it, as a text line's [api-0] does
    records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    assert "engine-core" in {r.get("process") for r in records}
    assert "process" not in access  # one API process: the server's own, untagged as in a text line
    assert "prompts" not in access and "Once upon" not in srv.log()  # text only with --log-prompts
    # A quiet exit: no stray output (Triton's extension, if a CPU server imported it, reports leaks here)
    assert [line for line in srv.log().splitlines() if not line.startswith("{")] == []


def test_requests_past_the_drain_timeout_end_with_an_error_and_the_server_exits_0(servers):
    srv = servers["drain_timeout"]
    body = {"prompt": "Tell me a long story.", "max_tokens": 900, "ignore_eos": True}
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    whole = posted_in_background(http, "/v1/completions", body)
    with httpx.stream(
        "POST", f"{srv.base_url}/v1/completions", json={**body, "stream": True}, timeout=60
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        srv.proc.send_signal(signal.SIGTERM)
        events = [line for line in lines if line]
    # the stream had begun: it ends with an error event and [DONE], not a connection cut mid-reply
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["error"]["code"] == "shutting_down"
    assert len(events) < 900
    r = whole()
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert srv.proc.wait(30) == 0
    records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    assert not [r for r in records if r["level"] == "ERROR"]  # nothing cancelled under the handlers
    assert "its drain timeout ran out: ending 2 requests still in flight" in srv.log()
    streamed = [r for r in records if r.get("path") == "/v1/completions" and r.get("status") == 200]
    assert [r["error"] for r in streamed] == ["shutting_down"]  # a 200 whose stream ended in an error


def test_engine_death_fails_requests_and_exits_nonzero(servers):
    srv = servers["engine_death"]
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    body = {"prompt": "Once upon a time", "max_tokens": 60, "ignore_eos": True}
    response = posted_in_background(http, "/v1/completions", body)
    wait_until(lambda: engine_stats(http)["num_requests_running"] == 1, timeout=10)
    srv.engine_process().kill()
    r = response()
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "engine_dead" and r.json()["error"]["type"] == "server_error"
    with contextlib.suppress(httpx.TransportError):  # the server may be gone already; if not, not ready
        assert http.get("/ready").status_code == 503
    assert srv.proc.wait(30) != 0


def test_log_prompts_puts_prompt_and_output_text_into_the_access_log(servers):
    srv = servers["orphan"]
    body = {"prompt": "Once upon a time", "max_tokens": 5, "n": 2, "temperature": 1.0}
    r = httpx.post(f"{srv.base_url}/v1/completions", json=body, timeout=60).json()
    wait_until(lambda: access_records(srv, "/v1/completions"), timeout=5)
    (access,) = access_records(srv, "/v1/completions")
    assert access["prompts"] == ["Once upon a time"]
    assert access["outputs"] == [c["text"] for c in sorted(r["choices"], key=lambda c: c["index"])]
    assert access["completion_tokens"] == r["usage"]["completion_tokens"]


def test_log_prompts_in_text_format_puts_them_on_the_access_line_as_json_strings(tmp_path):
    with running_server(tmp_path / "server.log", "--num-kv-blocks", "64", "--log-prompts") as srv:
        body = {"prompt": "Once upon\na time in Zürich", "max_tokens": 3, "temperature": 0}
        text = httpx.post(f"{srv.base_url}/v1/completions", json=body, timeout=60).json()["choices"][0][
            "text"
        ]
        wait_until(lambda: "POST /v1/completions 200" in srv.log(), timeout=5)
    (line,) = [line for line in srv.log().splitlines() if "POST /v1/completions 200" in line]
    prompts, outputs = (
        json.dumps([body["prompt"]], ensure_ascii=False),
        json.dumps([text], ensure_ascii=False),
    )
    assert line.endswith(f"prompts={prompts} outputs={outputs}") and "Zürich" in line
    assert re.search(r" client=127\.0\.0\.1:\d+ ", line)  # who sent it, as the JSON record's `client`


def access_records(srv: ServerProcess, path: str) -> list[dict]:
    records = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "pyinfer.access" and r.get("path") == path]


def test_engine_exits_when_the_server_is_killed(servers):
    srv = servers["orphan"]
    engine = srv.engine_process()
    srv.proc.kill()
    srv.proc.wait(10)
    engine.wait(10)  # raises TimeoutExpired if it lives on


@pytest.mark.parametrize(("api_processes", "shared"), [("1", False), ("2", False), ("2", True)])
def test_a_port_in_use_stops_the_start_before_the_engine_starts(api_processes, shared):
    """`shared`: the port is held as servers that share it among processes hold it (SO_REUSEPORT, as
    nginx's reuseport and vLLM do), which a socket of ours with that option would join unnoticed."""
    with socket.create_server(("127.0.0.1", 0), reuse_port=shared) as taken:
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "pyinfer", "serve", "--device", "cpu", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--api-server-count", api_processes]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "engine core" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--tokenizer", "/nowhere"], "--tokenizer '/nowhere' not found"),
        pytest.param(
            ["--device", "cuda"],
            "--device cuda: no GPU is visible",
            marks=pytest.mark.skipif(cuda_device_visible(), reason="a GPU is visible here"),
        ),
        (["--model", "/nowhere.gguf"], "model '/nowhere.gguf' not found"),
    ],
)
def test_what_the_engine_would_fail_on_stops_the_start_before_it_starts(flags, said):
    cmd = [sys.executable, "-m", "pyinfer", "serve", "--port", "0", "--api-server-count", "2", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and said in done.stderr
    assert "engine core" not in done.stderr and "listening on" not in done.stderr


@pytest.mark.parametrize(
    "api_processes, flags, said",
    [
        (
            "1",
            ["--max-model-len", "100000"],
            "--max-model-len 100000 is more than the model's 8192 positions",
        ),
        (
            "2",
            ["--num-kv-blocks", "8", "--max-model-len", "1024"],
            "the KV cache holds 128 tokens, less than --max-model-len 1024: raise --num-kv-blocks",
        ),
    ],
)
def test_settings_the_loaded_model_cannot_serve_are_refused_not_cut_in_silence(api_processes, flags, said):
    """As vLLM: a context the operator asked for is served in full or the start fails, saying why."""
    cmd = [sys.executable, "-m", "pyinfer", "serve", "--device", "cpu", "--port", "0"]
    done = subprocess.run(
        [*cmd, "--api-server-count", api_processes, *flags], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 2 and said in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("api_processes", ["1", "2"])
def test_a_second_ctrl_c_ends_the_streams_in_flight_at_once_each_with_its_error(tmp_path, api_processes):
    flags = ("--num-kv-blocks", "160", "--drain-timeout", "120", "--api-server-count", api_processes)
    with running_server(tmp_path / "server.log", *flags) as srv:
        body = {"prompt": "Tell me a long story.", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=60) as r:
            lines = (line for line in r.iter_lines() if line)
            assert next(lines).startswith("data: ")
            srv.proc.send_signal(signal.SIGINT)  # drains: the stream goes on
            assert all("choices" in next(lines) for _ in range(40))
            srv.proc.send_signal(signal.SIGINT)  # now
            events = list(lines)
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][6:])["error"]["code"] == "shutting_down"
        assert "a second Ctrl-C asked to stop now" in json.loads(events[-2][6:])["error"]["message"]
        assert srv.proc.wait(30) == 0
