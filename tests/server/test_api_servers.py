"""Several API processes in front of one engine core (`pyinfer serve --api-server-count 2`): every stream
completes with the right text and usage whichever process serves it, /metrics counts them all, a
disconnect frees the engine's blocks, SIGTERM drains and exits 0, the engine's death fails requests and
exits non-zero, and no process is left behind."""

from __future__ import annotations

import json
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.server.helpers import (
    ServerProcess,
    all_stopped,
    assert_a_client_that_leaves_frees_its_blocks,
    assert_a_death_fails_requests_and_every_process_exits,
    assert_sigterm_to_every_process_drains_and_exits_0,
    engine_stats,
    family,
    wait_until,
)

FLAGS = ("--api-server-count", "2", "--num-kv-blocks", "64")


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict[str, ServerProcess]:
    folder = tmp_path_factory.mktemp("api_servers")
    names = ("serve", "sigterm", "death", "loading")
    procs = {name: ServerProcess(folder / f"{name}.log", *FLAGS) for name in names}
    with all_stopped(procs):
        early = procs.pop("loading")
        wait_until(lambda: "2 API processes started" in early.log(), timeout=60)  # the model loading
        early.children = family(early)
        early.proc.send_signal(signal.SIGTERM)
        for srv in procs.values():
            srv.wait_ready()
        yield {**procs, "loading": early}


def core_of(srv: ServerProcess) -> psutil.Process:
    (core,) = [p for p in family(srv) if "pyinfer.engine.core" in p.cmdline()]
    return core


def chat(http: httpx.Client, prompt: str, stream: bool) -> tuple[str, int]:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 12,
        "temperature": 0,
        "ignore_eos": True,
    }
    if not stream:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"], r.json()["usage"]["completion_tokens"]
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    text, usage = "", None
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
                usage = chunk.get("usage") or usage
    return text, usage["completion_tokens"]


def test_streams_through_both_processes_match_whole_replies_and_metrics_count_them_all(servers):
    srv = servers["serve"]
    http = httpx.Client(base_url=srv.base_url, timeout=120, limits=httpx.Limits(max_keepalive_connections=0))
    prompts = [f"Count to {i} in words." for i in range(24)]
    with ThreadPoolExecutor(12) as pool:  # each request its own connection: the kernel spreads them
        streamed = list(pool.map(lambda p: chat(http, p, stream=True), prompts))
        whole = list(pool.map(lambda p: chat(http, p, stream=False), prompts))
    assert streamed == whole and all(tokens == 12 for _, tokens in streamed)
    served_by = set(re.findall(r"\[api-(\d)\] pyinfer\.access: POST /v1/chat", srv.log()))
    assert served_by == {"0", "1"}
    metrics = http.get("/metrics").text
    (count,) = re.findall(
        r'http_requests_total\{method="POST",route="/v1/chat/completions",status="200"\} (\S+)', metrics
    )
    assert float(count) == 48  # both processes' requests, whichever answered the scrape
    assert engine_stats(http)["kv_cache_free_blocks"] == 64  # the engine's own, from either


def test_a_client_that_leaves_frees_its_blocks(servers):
    assert_a_client_that_leaves_frees_its_blocks(servers["serve"])


def test_sigterm_drains_every_process_and_exits_0_leaving_none_behind(servers):
    assert len(family(servers["sigterm"])) == 3
    assert_sigterm_to_every_process_drains_and_exits_0(servers["sigterm"], max_tokens=40)


def test_sigterm_while_the_model_loads_stops_everything_and_exits_0(servers):
    srv = servers["loading"]
    assert srv.proc.wait(60) == 0
    _gone, alive = psutil.wait_procs(srv.children, timeout=10)
    assert not alive


def test_engine_death_fails_requests_and_every_process_exits(servers):
    srv = servers["death"]
    assert_a_death_fails_requests_and_every_process_exits(srv, lambda: core_of(srv), timeout=30)


@pytest.mark.parametrize(
    "limits",
    [{"rate_limit_rpm": 10}, {"rate_limit_tpm": 1000}, {"max_queued_requests": 4}, {"max_queued_tokens": 99}],
)
def test_per_process_limits_are_refused_with_several_api_processes(limits):
    from pyinfer.server.config import ServerConfig

    ServerConfig(api_server_count=1, **limits)
    with pytest.raises(ValueError, match="--api-server-count 1"):
        ServerConfig(api_server_count=2, **limits)


def test_a_key_file_with_limits_is_refused_with_several_api_processes(tmp_path):
    from pyinfer.config import EngineConfig
    from pyinfer.server.api_servers import serve_with_api_processes
    from pyinfer.server.config import ServerConfig

    keys = tmp_path / "keys"
    keys.write_text("sk-one alice 10\n")
    with pytest.raises(ValueError, match="--api-server-count 1"):
        serve_with_api_processes(ServerConfig(api_server_count=2, api_key_file=str(keys)), EngineConfig())
