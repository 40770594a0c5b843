"""Faults: clients that leave at random points, SIGTERM under load, an engine killed under load, an engine
that hangs. None may leave a request running, a KV block held, or a process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading

import httpx
import pytest

from tests.server.helpers import ServerProcess, all_stopped, engine_idle, engine_stats, wait_until

DISCONNECTS = 100
FAULTS = ("sigterm", "killed", "hung")


def test_100_clients_leaving_at_random_points_leave_nothing_behind(sturdy, sturdy_http, tally):
    rng = random.Random(1)
    kinds = ["before the first token", "mid-stream", "non-streaming"]

    async def leave(http: httpx.AsyncClient, i: int) -> str:
        kind = rng.choice(kinds)
        body = {
            "prompt": f"Story {i}: " + "once " * rng.randint(1, 200),
            "max_tokens": 200,
            "ignore_eos": True,
        }
        if kind == "non-streaming":  # gone while the server computes the whole reply
            with pytest.raises(httpx.ReadTimeout):
                # only the wait for the reply is cut short: a connect slowed by the loaded 2-core machine is not a leave
                read_cut = httpx.Timeout(120, read=rng.uniform(0.05, 1.0))
                await http.post("/v1/completions", json=body, timeout=read_cut)
            return kind
        async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            if kind == "mid-stream":
                lines = r.aiter_lines()
                for _ in range(rng.randint(1, 20)):
                    await anext(lines)
        return kind  # leaving the block closes the connection: before a token, or mid-stream

    async def run() -> list[str]:
        async with httpx.AsyncClient(base_url=sturdy.base_url, timeout=120) as http:
            done: list[str] = []
            for start in range(0, DISCONNECTS, 25):  # 25 at a time, the rest while those are running
                done += await asyncio.gather(*(leave(http, i) for i in range(start, start + 25)))
            return done

    kinds_seen = asyncio.run(run())
    wait_until(lambda: engine_idle(sturdy_http), timeout=30)
    assert set(kinds_seen) == set(kinds)
    ok = sturdy_http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3  # still serving
    stats = engine_stats(sturdy_http)
    tally["client disconnects injected"] += DISCONNECTS
    tally["blocks leaked"] += int(stats["kv_cache_blocks"] - stats["kv_cache_free_blocks"])


def streams_in_flight(srv: ServerProcess, count: int, max_tokens: int) -> tuple[list, list[threading.Thread]]:
    """`count` streaming completions on threads, returned once each has its first event; each result:
    (status, events), or the exception."""
    results: list = [None] * count
    started = threading.Barrier(count + 1)

    def stream(i: int) -> None:
        body = {"prompt": f"Tale {i}", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", f"{srv.base_url}/v1/completions", json=body, timeout=120) as r:
                lines = r.iter_lines()
                first = next(lines)
                started.wait(60)
                results[i] = (r.status_code, [first, *(line for line in lines if line)])
        except Exception as e:  # the test looks at what each client saw
            results[i] = e
            started.abort()

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    started.wait(120)
    return results, threads


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A server for each process fault, loading together; the one whose engine hangs calls it hung soon."""
    folder = tmp_path_factory.mktemp("faults")
    flags = {n: ("--num-kv-blocks", "256", "--max-num-seqs", "16", "--log-format", "json") for n in FAULTS}
    flags["hung"] += ("--engine-hang-timeout", "2")
    with all_stopped({n: ServerProcess(folder / f"{n}.log", *flags[n]) for n in FAULTS}) as procs:
        for srv in procs.values():
            srv.wait_ready()
        yield procs


def test_sigterm_under_load_drains_every_stream_and_exits_0(servers, tally):
    srv = servers["sigterm"]
    engine = srv.engine_process()
    results, threads = streams_in_flight(srv, 16, max_tokens=40)
    srv.proc.send_signal(signal.SIGTERM)
    # at once: no new work here, whether the listener is still open (a 503) or closed already: the
    # connection refused, or reset if it was still in the listener's queue when that closed
    with contextlib.suppress(httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        assert httpx.get(f"{srv.base_url}/ready", timeout=5).status_code == 503
    for t in threads:
        t.join(120)
    for status, events in results:
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert status == 200 and events[-1] == "data: [DONE]"
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert srv.proc.wait(60) == 0
    assert not engine.is_running()
    tally["SIGTERM under load: streams drained"] += len(results)


def test_a_killed_engine_fails_every_request_cleanly_and_exits_nonzero(servers, tally):
    srv = servers["killed"]
    engine = srv.engine_process()
    results, threads = streams_in_flight(srv, 8, max_tokens=400)
    plain: dict[str, httpx.Response] = {}

    def non_streaming() -> None:
        body = {"prompt": "Waiting", "max_tokens": 400, "ignore_eos": True}
        plain["r"] = httpx.post(f"{srv.base_url}/v1/completions", json=body, timeout=120)

    waiter = threading.Thread(target=non_streaming)
    waiter.start()
    stats = f"{srv.base_url}/v1/engine/stats"
    wait_until(lambda: httpx.get(stats).json()["num_requests_running"] >= 9, 30)
    engine.kill()
    waiter.join(60)
    for t in threads:
        t.join(60)
    r = plain["r"]
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_dead"
    for status, events in results:  # a begun stream ends with an error event, never a hang
        assert status == 200
        assert any('"engine_dead"' in e for e in events), events[-3:]
    assert srv.proc.wait(30) != 0
    tally["engine kills under load: requests failed cleanly"] += len(results) + 1


def test_a_hung_engine_fails_health_and_ready_until_it_answers_again(servers):
    srv = servers["hung"]
    engine = srv.engine_process()
    probe = {path: f"{srv.base_url}{path}" for path in ("/health", "/ready")}
    assert [httpx.get(url, timeout=5).status_code for url in probe.values()] == [200, 200]
    engine.suspend()  # SIGSTOP: alive, answering nothing, as a core stuck in a step
    try:
        wait_until(lambda: httpx.get(probe["/health"], timeout=5).status_code == 503, 30, interval=0.5)
        for url in probe.values():
            r = httpx.get(url, timeout=5)  # at once, though the engine answers nothing
            assert r.status_code == 503 and r.json()["status"] == "engine_hung", r.text
            assert "has not answered for" in r.json()["detail"]
    finally:
        engine.resume()
    wait_until(lambda: httpx.get(probe["/health"], timeout=5).status_code == 200, 30, interval=0.2)
    assert httpx.get(probe["/ready"], timeout=5).status_code == 200
    body = {"prompt": "Hello", "max_tokens": 4}
    assert httpx.post(f"{srv.base_url}/v1/completions", json=body, timeout=60).status_code == 200
