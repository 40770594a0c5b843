"""/metrics in Prometheus' text format: it parses, its counters follow the requests made, and they only grow."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import running_server


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_counters_follow_the_requests_and_only_grow(http, client, model):
    before = scrape(http)
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, n=2, temperature=1.0, seed=1
    )
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, stream=True)
    streamed = sum(1 for chunk in stream if chunk.choices and chunk.choices[0].text)
    response = client.responses.create(model=model, input="Hello", max_output_tokens=4)
    after = scrape(http)

    prompt = chat.usage.prompt_tokens + response.usage.input_tokens
    generated = chat.usage.completion_tokens + response.usage.output_tokens
    grew = {name: value(after, name) - value(before, name) for name in {n for n, _ in after}}
    assert grew["pyinfer:prompt_tokens_total"] >= prompt + 4  # "Once upon a time": 4 tokens or more
    assert grew["pyinfer:generation_tokens_total"] >= generated + streamed
    assert grew["pyinfer:e2e_request_latency_seconds_count"] == 3
    assert grew["pyinfer:time_to_first_token_seconds_count"] == 3
    assert grew["pyinfer:request_success_total"] == 4  # choices: 2 + 1 + 1
    assert grew["pyinfer:inter_token_latency_seconds_count"] >= generated + streamed - 4
    chat_ok = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    assert (
        value(after, "pyinfer:http_requests_total", **chat_ok)
        - value(before, "pyinfer:http_requests_total", **chat_ok)
        == 1
    )
    for (name, labels), v in before.items():  # counters and histogram counts never go back
        if name.endswith(("_total", "_count", "_bucket")):
            assert after.get((name, labels), 0) >= v, name


def test_http_requests_are_labelled_by_method_and_route_template(http):
    before = scrape(http)
    assert http.get("/v1/responses/resp_nonesuch").status_code == 404
    assert http.get("/no/such/path").status_code == 404
    after = scrape(http)

    def grew(**labels: str) -> float:
        return value(after, "pyinfer:http_requests_total", **labels) - value(
            before, "pyinfer:http_requests_total", **labels
        )

    assert grew(method="GET", route="/v1/responses/{response_id}", status="404") == 1  # a template
    assert grew(method="GET", route="unmatched", status="404") == 1


def test_engine_gauges_and_cache_layout(http):
    samples = scrape(http)
    for name in (
        "pyinfer:num_requests_running",
        "pyinfer:num_requests_waiting",
        "pyinfer:kv_cache_usage_perc",
    ):
        assert any(n == name for n, _ in samples), name
    assert 0 <= value(samples, "pyinfer:kv_cache_usage_perc") <= 1
    ((labels, one),) = [(dict(ls), v) for (n, ls), v in samples.items() if n == "pyinfer:cache_config_info"]
    assert one == 1 and labels["block_size"] == "16" and int(labels["num_gpu_blocks"]) == 512
    for name in ("num_constrained_requests", "grammar_compile_seconds", "num_tool_call_parse_failures"):
        assert any(n == f"pyinfer:{name}_total" for n, _ in samples), name
    queries = value(samples, "pyinfer:prefix_cache_queries_total")
    assert value(samples, "pyinfer:prefix_cache_hits_total") <= queries
    assert http.get("/v1/engine/stats").json()["num_requests_running"] == value(
        samples, "pyinfer:num_requests_running"
    )


@pytest.mark.parametrize("processes", ["one", "several"])
def test_the_model_s_series_exist_before_their_first_event(tmp_path, processes):
    """Each finish reason's count, each latency histogram and each refusal's count, at zero before any request: in one API
    process's registry and in several's shared files (a fresh interpreter: prometheus_client reads
    PROMETHEUS_MULTIPROC_DIR when it is imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if processes == "several":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    script = (
        "import sys\n"
        "from pyinfer.server.prometheus import ServerMetrics\n"
        "sys.stdout.write(ServerMetrics('m').exposition(None).decode())\n"
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(run.stdout)
        for s in family.samples
    }
    for reason in ("stop", "length", "tool_calls", "abort"):
        assert (
            "pyinfer:request_success_total",
            (("finished_reason", reason), ("model_name", "m")),
            0,
        ) in samples
    for histogram in (
        "time_to_first_token_seconds",
        "request_queue_time_seconds",
        "e2e_request_latency_seconds",
    ):
        assert (f"pyinfer:{histogram}_count", (("model_name", "m"),), 0) in samples
    for code in ("queue_full", "queue_full_tokens"):
        assert ("pyinfer:request_rejections_total", (("code", code), ("model_name", "m")), 0) in samples
    assert ("pyinfer:api_key_refusals_total", (("key", ""), ("status", "401")), 0) in samples
    # the same series either way: no `_created` ones, which only one process's registry would have
    assert not [name for name, _, _ in samples if name.endswith("_created")]


def test_a_scrape_does_not_wait_out_an_engine_step(server, http):
    """The core answers between steps; one held up (here stopped) must not hold the scrape past a second
    or so: the last figures come, with their age."""
    assert value(scrape(http), "pyinfer:engine_stats_age_seconds") == 0
    engine = server.engine_process()
    engine.suspend()
    try:
        start = time.monotonic()
        samples = scrape(http)
        took = time.monotonic() - start
    finally:
        engine.resume()
    assert 1.0 <= took < 5.0
    assert value(samples, "pyinfer:engine_stats_age_seconds") >= 1.0
    assert any(n == "pyinfer:num_requests_running" for n, _ in samples)
    assert http.get("/v1/engine/stats").json()["stats_age_s"] == 0  # the core answers again, at once


def test_an_engine_that_hangs_before_any_scrape_still_shows_its_figures_and_their_age(tmp_path):
    """The alert on the figures' age must fire for an engine that stops before its first answer too: its
    ready message gave the first figures, aged from then."""
    with running_server(tmp_path / "server.log", "--num-kv-blocks", "64") as srv:
        engine = srv.engine_process()
        engine.suspend()
        try:
            with httpx.Client(base_url=srv.base_url, timeout=30) as http:
                first, second = scrape(http), scrape(http)
        finally:
            engine.resume()
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert any(n == f"pyinfer:{name}" for n, _ in first), name
    first_age = value(first, "pyinfer:engine_stats_age_seconds")
    assert 1.0 <= first_age < value(second, "pyinfer:engine_stats_age_seconds")
