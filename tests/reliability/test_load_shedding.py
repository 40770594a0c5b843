"""Load shedding and priorities against a live server: a full queue refuses at once with a 503 the client
may retry, a body past the limit is a 413 (declared or chunked), and an urgent request overtakes a
running one in a full batch."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import ServerProcess, assert_error, running_server, wait_until


@pytest.fixture(scope="module")
def bounded(tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("shed") / "server.log"
    flags = ("--max-num-seqs", "1", "--max-queued-requests", "2", "--max-queued-tokens", "300")
    flags += ("--max-request-body", "4096", "--scheduling-policy", "priority")
    with running_server(log, *flags, "--num-kv-blocks", "64") as srv:
        yield srv


def test_a_full_queue_refuses_at_once_and_counts_it(bounded):
    url = f"{bounded.base_url}/v1/completions"
    first_token = threading.Event()

    def long_stream() -> None:  # holds the only running slot
        body = {"prompt": "Tell me a long story.", "max_tokens": 120, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=120) as r:
            for _ in r.iter_lines():
                first_token.set()

    def waiting() -> None:  # waits for the slot
        httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=120)

    def num_waiting() -> int:
        return httpx.get(f"{bounded.base_url}/v1/engine/stats").json()["num_requests_waiting"]

    def refused(prompt: str, code: str) -> float:
        start = time.perf_counter()
        r = httpx.post(url, json={"prompt": prompt, "max_tokens": 1}, timeout=30)
        elapsed = time.perf_counter() - start
        assert assert_error(r, 503)["code"] == code and r.headers["retry-after"] == "1"
        assert elapsed < 0.25  # refused without waiting on the engine, even on a busy 2-core machine
        return elapsed

    threads = [threading.Thread(target=long_stream), threading.Thread(target=waiting)]
    threads[0].start()
    assert first_token.wait(60)
    threads[1].start()
    wait_until(lambda: num_waiting() == 1, 30)
    refused("word " * 400, "queue_full_tokens")  # a few tokens wait already: 400 more pass 300
    threads.append(threading.Thread(target=waiting))
    threads[-1].start()
    wait_until(lambda: num_waiting() == 2, 30)
    times = [refused("And me?", "queue_full") for _ in range(10)]  # two wait: refused before tokenizing
    assert statistics.median(times) < 0.05, times
    for thread in threads:
        thread.join(120)
    assert httpx.post(url, json={"prompt": "word " * 400, "max_tokens": 1}, timeout=60).status_code == 200
    rejections = {
        s.labels["code"]: s.value
        for family in text_string_to_metric_families(httpx.get(f"{bounded.base_url}/metrics").text)
        for s in family.samples
        if s.name == "pyinfer:request_rejections_total"
    }
    assert rejections == {"queue_full": 10, "queue_full_tokens": 1}


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_the_limit_is_a_413(bounded, chunked):
    padding = "x" * 5000
    body = f'{{"prompt": "{padding}", "max_tokens": 1}}'.encode()
    content = iter([body[:2000], body[2000:]]) if chunked else body
    r = httpx.post(
        f"{bounded.base_url}/v1/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert assert_error(r, 413)["code"] == "request_too_large"
    small = httpx.post(
        f"{bounded.base_url}/v1/completions", content=iter([b'{"prompt": "hi", ', b'"max_tokens": 1}'])
    )
    assert small.status_code == 200


def test_an_urgent_request_overtakes_a_running_one(bounded):
    url = f"{bounded.base_url}/v1/completions"
    first_token, finished = threading.Event(), []

    def long_stream() -> None:  # holds the only running slot for 150 tokens
        body = {"prompt": "Tell me a long story.", "max_tokens": 150, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=120) as r:
            for _ in r.iter_lines():
                first_token.set()
        finished.append("long")

    thread = threading.Thread(target=long_stream)
    thread.start()
    assert first_token.wait(60)
    urgent = httpx.post(url, json={"prompt": "Quick!", "max_tokens": 2, "priority": -1}, timeout=60)
    finished.append("urgent")
    thread.join(120)
    assert urgent.status_code == 200 and finished == ["urgent", "long"]
    assert urgent.json()["usage"]["performance"]["queue_ms"] < 1000  # it did not wait for the slot


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("timeout") / "server.log"
    with running_server(log, "--request-timeout", "1.5", "--num-kv-blocks", "128") as srv:
        yield srv


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_past_its_timeout_is_aborted_and_frees_its_blocks(timed, stream):
    body = {"prompt": "Tell me a long story.", "max_tokens": 1000, "ignore_eos": True, "stream": stream}
    start = time.perf_counter()
    r = httpx.post(f"{timed.base_url}/v1/completions", json=body, timeout=60)
    assert time.perf_counter() - start < 10
    if stream:  # the stream had begun: it ends with an error event
        assert (
            r.status_code == 200
            and '"code":"request_timeout"' in r.text
            and r.text.endswith("data: [DONE]\n\n")
        )
    else:
        assert assert_error(r, 504)["code"] == "request_timeout"

    def idle() -> bool:
        stats = httpx.get(f"{timed.base_url}/v1/engine/stats").json()
        return stats["num_requests_running"] == 0 and stats["kv_cache_usage"] == 0

    wait_until(idle, 10)
    short = httpx.post(f"{timed.base_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert short.status_code == 200
