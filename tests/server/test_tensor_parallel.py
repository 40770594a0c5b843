"""`pyinfer serve --tensor-parallel-size 2` (the embedded SmolLM2 in float32, gloo on the CPU): replies equal
one rank's, streamed or not, with logprobs within float32's rounding; a client that leaves frees its
blocks; SIGTERM drains and exits 0; a rank killed mid-run fails the requests, takes the group down and
the server exits non-zero within seconds; no process is left behind."""

from __future__ import annotations

import json
import signal

import httpx
import psutil
import pytest
from openai import OpenAI

from pyinfer.sampling_params import SamplingParams
from tests.server.helpers import (
    ServerProcess,
    all_stopped,
    engine_idle,
    engine_stats,
    posted_in_background,
    wait_until,
)

FLAGS = ("--tensor-parallel-size", "2", "--kv-cache-memory-gb", "0.1")
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict[str, ServerProcess]:
    folder = tmp_path_factory.mktemp("tensor_parallel")
    procs = {name: ServerProcess(folder / f"{name}.log", *FLAGS) for name in ("serve", "sigterm", "death")}
    with all_stopped(procs):
        for srv in procs.values():
            srv.wait_ready()
        yield procs


def family(srv: ServerProcess) -> list[psutil.Process]:
    """The server's processes below it: the engine core (rank 0) and rank 1."""
    return psutil.Process(srv.proc.pid).children(recursive=True)


def rank_1(srv: ServerProcess) -> psutil.Process:
    (worker,) = [p for p in family(srv) if "pyinfer.engine.tp_worker" in p.cmdline()]
    return worker


def test_replies_equal_one_ranks_streamed_or_not(servers, smollm2_llm):
    srv = servers["serve"]
    client = OpenAI(base_url=f"{srv.base_url}/v1", api_key="none", timeout=120)
    model = client.models.list().data[0].id
    one_rank = smollm2_llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=16, logprobs=3))
    for prompt, expected in zip(PROMPTS, one_rank, strict=True):
        whole = client.completions.create(
            model=model, prompt=prompt, max_tokens=16, temperature=0, logprobs=3
        )
        stream = client.completions.create(
            model=model, prompt=prompt, max_tokens=16, temperature=0, stream=True
        )
        streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
        choice = whole.choices[0]
        assert choice.text == streamed == expected.outputs[0].text
        ours = choice.logprobs.token_logprobs
        theirs = [lp.logprob for lp in expected.outputs[0].logprobs]
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-3


def test_a_client_that_leaves_frees_its_blocks(servers):
    srv = servers["serve"]
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    body = {"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()  # kept: a dropped iterator closes the stream
        assert next(lines).startswith("data: ")
        assert engine_stats(http)["num_requests_running"] == 1
    wait_until(lambda: engine_idle(http), timeout=10)


def test_sigterm_drains_and_exits_0_leaving_no_rank_behind(servers):
    srv = servers["sigterm"]
    children = family(srv)
    assert len(children) == 2
    body = {"prompt": "Once upon a time", "max_tokens": 24, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        for proc in [srv.proc, *children]:  # every process, as systemd's stop does
            proc.send_signal(signal.SIGTERM)
        events = [line for line in lines if line]
    finishes = [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-1]]
    assert finishes[-1] == "length" and events[-1] == "data: [DONE]"
    assert srv.proc.wait(60) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_rank_killed_mid_run_takes_the_group_down_within_seconds(servers):
    srv = servers["death"]
    children = family(srv)
    http = httpx.Client(base_url=srv.base_url, timeout=60)
    body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}
    response = posted_in_background(http, "/v1/completions", body)
    wait_until(lambda: engine_stats(http)["num_requests_running"] == 1, timeout=10)
    rank_1(srv).kill()
    r = response()
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_dead"
    assert srv.proc.wait(15) != 0
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    assert "tensor-parallel rank 1" in srv.log() and "exited with code -9" in srv.log()
