"""`pyinfer serve --tensor-parallel-size 2` (the embedded SmolLM2 in float32, gloo on the CPU): replies equal
one rank's, streamed or not, with logprobs within float32's rounding; a client that leaves frees its
blocks; SIGTERM drains and exits 0; a rank killed mid-run fails the requests, takes the group down and
the server exits non-zero within seconds; no process is left behind; every rank logs in the server's format."""

from __future__ import annotations

import json

import psutil
import pytest
from openai import OpenAI

from pyinfer.sampling_params import SamplingParams
from tests.server.helpers import (
    ServerProcess,
    all_stopped,
    assert_a_client_that_leaves_frees_its_blocks,
    assert_a_death_fails_requests_and_every_process_exits,
    assert_sigterm_to_every_process_drains_and_exits_0,
    family,
)

FLAGS = ("--tensor-parallel-size", "2", "--kv-cache-memory-gb", "0.1")
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict[str, ServerProcess]:
    folder = tmp_path_factory.mktemp("tensor_parallel")
    extra = {"serve": (), "sigterm": (), "death": ("--log-format", "json")}
    procs = {name: ServerProcess(folder / f"{name}.log", *FLAGS, *flags) for name, flags in extra.items()}
    with all_stopped(procs):
        for srv in procs.values():
            srv.wait_ready()
        yield procs


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
    assert_a_client_that_leaves_frees_its_blocks(servers["serve"])


def test_sigterm_drains_and_exits_0_leaving_no_rank_behind(servers):
    assert len(family(servers["sigterm"])) == 2  # the engine core (rank 0) and rank 1
    assert_sigterm_to_every_process_drains_and_exits_0(servers["sigterm"], max_tokens=24)


def test_a_rank_killed_mid_run_takes_the_group_down_within_seconds(servers):
    srv = servers["death"]
    assert_a_death_fails_requests_and_every_process_exits(srv, lambda: rank_1(srv), timeout=15)
    records = [json.loads(line) for line in srv.log().splitlines() if line.strip()]  # every line JSON
    assert any(r.get("process") == "tp-rank-1" and "ready" in r["message"] for r in records)
    assert any(
        "tensor-parallel rank 1" in r["message"] and "exited with code -9" in r["message"] for r in records
    )
