"""Load shedding and priorities against a live server: a full queue refuses at once with a 503 the client
may retry, a body past the limit is a 413 (declared or chunked), and an urgent request overtakes a
running one in a full batch."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import ServerProcess, assert_error, running_server, wait_until


def num_waiting(srv: ServerProcess) -> int:
    return httpx.get(f"{srv.base_url}/v1/engine/stats").json()["num_requests_waiting"]


def holding_the_slot(srv: ServerProcess, max_tokens: int) -> threading.Thread:
    """A stream on a thread that holds the server's only running slot for `max_tokens` tokens, so that
    every later request waits; returned once its first token has come."""
    first_token = threading.Event()

    def stream() -> None:
        body = {
            "prompt": "Tell me a long story.",
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=120) as r:
            for _ in r.iter_lines():
                first_token.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert first_token.wait(60)
    return thread


@pytest.fixture(scope="module")
def bounded(tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("shed") / "server.log"
    flags = ("--max-num-seqs", "1", "--max-queued-requests", "2", "--max-queued-tokens", "300")
    flags += ("--max-request-body", "4096", "--scheduling-policy", "priority")
    with running_server(log, *flags, "--num-kv-blocks", "64") as srv:
        yield srv


def test_a_full_queue_refuses_at_once_and_counts_it(bounded):
    url = f"{bounded.base_url}/v1/completions"

    def waiting() -> None:  # waits for the slot
        httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=120)

    def refused(prompt: str, code: str) -> float:
        start = time.perf_counter()
        r = httpx.post(url, json={"prompt": prompt, "max_tokens": 1}, timeout=30)
        elapsed = time.perf_counter() - start
        assert assert_error(r, 503)["code"] == code and r.headers["retry-after"] == "1"
        assert elapsed < 0.25  # refused without waiting on the engine, even on a busy 2-core machine
        return elapsed

    threads = [holding_the_slot(bounded, 120), threading.Thread(target=waiting)]
    try:
        threads[1].start()
        wait_until(lambda: num_waiting(bounded) == 1, 30)
        refused("word " * 400, "queue_full_tokens")  # a few tokens wait already: 400 more pass 300
        threads.append(threading.Thread(target=waiting))
        threads[-1].start()
        wait_until(lambda: num_waiting(bounded) == 2, 30)
        times = [refused("And me?", "queue_full") for _ in range(10)]  # two wait: refused before tokenizing
        assert statistics.median(times) < 0.05, times
    finally:  # a failure above must not leave the queue full for the module's other tests
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(120)
    assert httpx.post(url, json={"prompt": "word " * 400, "max_tokens": 1}, timeout=60).status_code == 200
    rejections = {
        s.labels["code"]: s.value
        for family in text_string_to_metric_families(httpx.get(f"{bounded.base_url}/metrics").text)
        for s in family.samples
        if s.name == "pyinfer:request_rejections_total"
    }
    assert rejections == {"queue_full": 10, "queue_full_tokens": 1}


@pytest.mark.parametrize(
    ("route", "prompt", "admitted", "code"),
    [
        ("chat", "Hi", 2, "queue_full"),  # two may wait
        ("completions", "Hi", 2, "queue_full"),
        ("responses", "Hi", 2, "queue_full"),
        ("completions", "word " * 200, 1, "queue_full_tokens"),  # one alone passes 300 tokens with the next
    ],
)
def test_requests_that_arrive_together_are_held_to_the_queue_limits(bounded, route, prompt, admitted, code):
    """Each request is counted as it is admitted, not once it reaches the engine."""
    client = openai.AsyncOpenAI(base_url=f"{bounded.base_url}/v1", api_key="-", max_retries=0)
    model = httpx.get(f"{bounded.base_url}/v1/models").json()["data"][0]["id"]

    async def one() -> int | str:
        try:
            if route == "chat":
                messages = [{"role": "user", "content": prompt}]
                await client.chat.completions.create(model=model, messages=messages, max_tokens=1)
            elif route == "completions":
                await client.completions.create(model=model, prompt=prompt, max_tokens=1)
            else:
                await client.responses.create(model=model, input=prompt, max_output_tokens=16)
        except openai.APIStatusError as e:
            assert e.status_code == 503 and e.response.headers["retry-after"] == "1"
            assert "are waiting" in e.body["message"]  # refused at admission, not shed by the engine later
            return e.body["code"]
        return 200

    async def together() -> list[int | str]:
        return await asyncio.gather(*(one() for _ in range(8)))

    thread = holding_the_slot(bounded, 150)
    results = asyncio.run(together())
    thread.join(120)
    assert sorted(results, key=str) == [200] * admitted + [code] * (8 - admitted)


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
    long = holding_the_slot(bounded, 150)
    urgent = httpx.post(url, json={"prompt": "Quick!", "max_tokens": 2, "priority": -1}, timeout=60)
    answered_first = long.is_alive()
    long.join(120)
    assert urgent.status_code == 200 and answered_first
    assert urgent.json()["usage"]["performance"]["queue_ms"] < 1000  # it did not wait for the slot


def test_a_queue_full_of_less_urgent_requests_admits_an_urgent_one_in_their_place(bounded):
    """Two requests of priority 5 fill the queue: a third is refused at once, one of priority 0 is admitted
    and the engine sheds the least urgent waiting ones to keep the bounds, the later of the two for the
    count, the other for the urgent one's long prompt (400 tokens past 300 with it): a 503 each."""
    url = f"{bounded.base_url}/v1/completions"

    def post(prompt: str, priority: int, stream: bool = False) -> httpx.Response:
        body = {"prompt": prompt, "max_tokens": 1, "priority": priority, "stream": stream}
        return httpx.post(url, json=body, timeout=120)

    long = holding_the_slot(bounded, 60)
    with ThreadPoolExecutor(3) as pool:
        waiting = []
        for n in (1, 2):  # the second streams: its shed is a 503 too, not an error event after a 200
            waiting.append(pool.submit(post, "Hi", 5, stream=n == 2))
            wait_until(lambda n=n: num_waiting(bounded) == n, 30)
        refused = post("Hi", 5)
        urgent = pool.submit(post, "word " * 400, 0)
        shed = [assert_error(w.result(120), 503) for w in waiting]
        assert urgent.result(120).status_code == 200
        long.join(120)
    error = assert_error(refused, 503)
    assert error["code"] == "queue_full" and error["message"].startswith(
        "The server is overloaded: 2 requests of priority 5 or more urgent are waiting (at most 2)"
    )
    assert [e["code"] for e in shed] == ["queue_full"] * 2
    assert "the queue passed its bound, and this was the least urgent request waiting" in shed[0]["message"]
    stats = httpx.get(f"{bounded.base_url}/v1/engine/stats").json()
    assert stats["num_requests_waiting"] == stats["num_requests_running"] == 0


def test_the_prompts_of_one_completions_request_are_never_shed_for_each_other(bounded):
    """Five prompts are five requests to the engine, four waiting for the one slot past a bound of two:
    served whole on an idle server (the engine shed all but two of them once, every time)."""
    prompts = [f"Count to {n}:" for n in range(5)]
    r = httpx.post(
        f"{bounded.base_url}/v1/completions", json={"prompt": prompts, "max_tokens": 2}, timeout=120
    )
    assert r.status_code == 200 and sorted(c["index"] for c in r.json()["choices"]) == list(range(5))


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
    else:  # the client would run it as long again: it is told not to retry
        assert assert_error(r, 504)["code"] == "request_timeout" and r.headers["x-should-retry"] == "false"

    def idle() -> bool:
        stats = httpx.get(f"{timed.base_url}/v1/engine/stats").json()
        return stats["num_requests_running"] == 0 and stats["kv_cache_usage"] == 0

    wait_until(idle, 10)
    short = httpx.post(f"{timed.base_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert short.status_code == 200
