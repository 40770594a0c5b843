"""Per-key rate limits against a live server: OpenAI's headers, 429s the official client waits out, one
key's limit leaving another key served, and token charges corrected by what was generated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
import openai
import pytest

from pyinfer.server.rate_limits import Bucket, duration
from tests.server.helpers import ServerProcess, assert_error, running_server, wait_until

KEYS = "sk-three three 3\nsk-six six 6\nsk-free free\nsk-tokens tokens 1000 400\n"


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("limits")
    (folder / "keys").write_text(KEYS)
    flags = ("--api-key-file", str(folder / "keys"), "--rate-limit-tpm", "100000", "--num-kv-blocks", "64")
    with running_server(folder / "server.log", *flags) as srv:
        yield srv


def complete(srv: ServerProcess, key: str, **body) -> httpx.Response:
    body = {"prompt": "Hello there", "max_tokens": 1, **body}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{srv.base_url}/v1/completions", json=body, headers=headers, timeout=60)


def test_a_key_past_its_requests_gets_a_429_with_headers_while_another_is_served(limited):
    remaining = []
    for _ in range(3):
        r = complete(limited, "sk-three")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"  # the server's default beside the key's own
    assert remaining == [2, 1, 0]
    refused = complete(limited, "sk-three")
    error = assert_error(refused, 429)
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    wait_ms = int(refused.headers["retry-after-ms"])  # one request comes back every 20 s
    assert 0 < wait_ms <= 20_000 and refused.headers["retry-after"] == str(-(-wait_ms // 1000))
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert complete(limited, "sk-free").status_code == 200  # another key, no limit of its own
    with pytest.raises(openai.RateLimitError):
        client = openai.OpenAI(base_url=f"{limited.base_url}/v1", api_key="sk-three", max_retries=0)
        client.completions.create(model="x", prompt="hi", max_tokens=1)
    metrics = httpx.get(f"{limited.base_url}/metrics").text  # by the key's name, never the key
    assert 'pyinfer:api_key_refusals_total{key="three",status="429"} 2.0' in metrics
    assert "sk-three" not in metrics


def test_the_official_client_waits_out_the_advertised_time(limited):
    client = openai.OpenAI(base_url=f"{limited.base_url}/v1", api_key="sk-six", max_retries=2, timeout=60)
    with ThreadPoolExecutor(10) as pool:  # six a minute, one back every 10 s: a burst of ten spends them
        burst = [pool.submit(complete, limited, "sk-six") for _ in range(10)]
        first_refusal = next(f for f in as_completed(burst) if f.result().status_code == 429)
        assert first_refusal.result().headers["x-ratelimit-remaining-requests"] == "0"
        reply = client.completions.with_raw_response.create(model=_model(limited), prompt="hi", max_tokens=1)
    assert reply.http_response.status_code == 200 and reply.retries_taken >= 1
    assert sorted(f.result().status_code for f in burst).count(429) >= 4


def test_tokens_are_charged_at_admission_and_corrected_at_the_end(limited):
    body = {"prompt": "Count: one, two, three.", "max_tokens": 200, "stop": ["."], "stream": True}
    headers = {"Authorization": "Bearer sk-tokens"}
    with httpx.stream(
        "POST", f"{limited.base_url}/v1/completions", json=body, headers=headers, timeout=60
    ) as r:
        # a stream's headers go out before it ends: the whole charge (prompt + max_tokens) is out then
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "400"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) <= 400 - 200
        chunks = [line for line in r.iter_lines() if line.startswith("data: {")]
    generated = len(chunks)  # one token a chunk here, the final chunk included
    assert generated < 200
    after = complete(limited, "sk-tokens", max_tokens=1)
    # a whole reply's headers go out after it ended: what both did not generate came back
    spent = 2 * after.json()["usage"]["prompt_tokens"] + generated + 1
    assert 400 - spent - 8 <= int(after.headers["x-ratelimit-remaining-tokens"]) <= 400
    too_big = complete(limited, "sk-tokens", max_tokens=500)
    assert too_big.status_code == 429 and "Request too large" in too_big.json()["error"]["message"]
    assert too_big.json()["error"]["type"] == "tokens"
    assert too_big.headers["x-should-retry"] == "false" and "retry-after" not in too_big.headers
    # so is one whose prompts together are (each would fit): one charge for the request, refused whole
    many = complete(limited, "sk-tokens", prompt=["Hello there"] * 20, max_tokens=20)
    assert many.status_code == 429 and "Request too large" in many.json()["error"]["message"]
    assert many.headers["x-should-retry"] == "false"
    # without max_tokens only the prompt is charged up front (the reply is settled at the end), so a
    # limit below the context length still serves such requests
    chat = httpx.post(
        f"{limited.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "stop": ["\n"]},
        headers=headers,
        timeout=60,
    )
    assert chat.status_code == 200


def test_requests_outside_generation_are_not_counted(limited):
    headers = {"Authorization": "Bearer sk-three"}
    for _ in range(5):
        assert httpx.get(f"{limited.base_url}/v1/models", headers=headers).status_code == 200


def test_buckets_refill_continuously_and_say_when_in_openai_s_words():
    bucket, wait = Bucket.full(60, now=1000.0).take(60)
    assert wait == 0 and bucket.take(1)[1] == 1.0  # one a second comes back
    assert bucket.headers("requests")["x-ratelimit-remaining-requests"] == "0"
    assert bucket.at(1000.5).take(1)[1] == 0.5 and bucket.at(1030.0).level == 30
    assert bucket.at(999.0).level == 0  # a clock set back gives nothing
    assert [duration(s) for s in (0.02, 1.0, 59.5, 360)] == ["20ms", "1s", "1m0s", "6m0s"]


def _model(srv: ServerProcess) -> str:
    return httpx.get(f"{srv.base_url}/v1/models", headers={"Authorization": "Bearer sk-free"}).json()["data"][
        0
    ]["id"]


@pytest.fixture(scope="module")
def shedding(tmp_path_factory) -> Iterator[ServerProcess]:
    flags = (
        "--rate-limit-rpm",
        "3",
        "--max-num-seqs",
        "1",
        "--max-queued-requests",
        "1",
        "--num-kv-blocks",
        "64",
    )
    with running_server(tmp_path_factory.mktemp("shed") / "server.log", *flags) as srv:
        yield srv


def test_a_request_the_server_refuses_for_its_own_reasons_is_given_back(shedding):
    url = f"{shedding.base_url}/v1/completions"
    first_token = threading.Event()

    def long_stream() -> None:  # the one running request
        body = {"prompt": "Tell me a long story.", "max_tokens": 100, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=120) as r:
            for _ in r.iter_lines():
                first_token.set()

    threads = [threading.Thread(target=long_stream)]
    threads.append(
        threading.Thread(target=lambda: httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=120))
    )
    start = time.monotonic()  # from here one request a minute comes back every 20 s
    threads[0].start()
    assert first_token.wait(60)
    threads[1].start()  # the one waiting request: two of the three a minute are taken
    wait_until(
        lambda: httpx.get(f"{shedding.base_url}/v1/engine/stats").json()["num_requests_waiting"] == 1, 30
    )
    refused = httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=30)
    assert assert_error(refused, 503)["code"] == "queue_full"
    assert refused.headers["x-ratelimit-remaining-requests"] == "1"  # the refused request was given back
    for thread in threads:
        thread.join()
    assert httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=30).status_code == 200  # not a 429
    again = httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, timeout=30)
    if time.monotonic() - start < 18:  # none came back yet: the allowance is spent
        assert assert_error(again, 429)["type"] == "requests"
