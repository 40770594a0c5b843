"""Many streams at once, and clients that leave early."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.server.helpers import engine_idle, engine_stats, wait_until


def test_32_concurrent_streams(server, model):
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[int, str, str]:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Count from {i} upwards."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        return usage.completion_tokens, finish, text

    async def run() -> list:
        client = openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120
        )
        async with client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(run())
    assert len(results) == 32
    assert all(tokens == 8 and finish == "length" and text for tokens, finish, text in results)


def test_streaming_disconnect_frees_blocks(server, model, http):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 400,  # about 20 s of decoding: the request must end long before that
        "ignore_eos": True,
        "stream": True,
    }
    url, headers = f"{server.base_url}/v1/chat/completions", {"x-request-id": "left-mid-stream"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        busy = engine_stats(http)
        assert busy["num_requests_running"] == 1 and busy["kv_cache_free_blocks"] < busy["kv_cache_blocks"]
    wait_until(lambda: engine_idle(http), timeout=5)
    # the access log tells the stream the client left from one it read to the end
    wait_until(lambda: "request_id=left-mid-stream" in server.log(), timeout=5)
    (line,) = [line for line in server.log().splitlines() if "request_id=left-mid-stream" in line]
    assert "/v1/chat/completions 200 cut off " in line


def test_non_streaming_disconnect_frees_blocks(server, model, http):
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=1.5)
    wait_until(lambda: engine_idle(http), timeout=5)


def test_stop_string_stops_the_engine_too(client, model, http):
    text = (
        client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, temperature=0)
        .choices[0]
        .text
    )
    stop = text[4:8]
    r = client.with_options(timeout=8).completions.create(  # 400 tokens would take 15 s or more
        model=model,
        prompt="Once upon a time",
        max_tokens=400,
        temperature=0,
        stop=stop,
        extra_body={"ignore_eos": True},
    )
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 12
    wait_until(
        lambda: engine_idle(http), timeout=3
    )  # the engine was told to stop, not left to run 400 tokens
