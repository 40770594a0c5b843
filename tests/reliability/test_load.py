"""64 streaming clients at once, several requests each with mixed lengths: every request completes with
the right usage, /metrics follows them exactly, and afterwards every KV block is free."""

from __future__ import annotations

import asyncio
import random

import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import engine_idle, wait_until

CLIENTS = 64
REQUESTS_EACH = 3


def samples(http) -> dict[str, float]:
    """Every sample of /metrics, summed over labels by name."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0) + s.value
    return sums


def test_64_streaming_clients_all_complete_and_leave_every_block_free(sturdy, sturdy_http, tally):
    model = sturdy_http.get("/v1/models").json()["data"][0]["id"]
    rng = random.Random(0)
    plans = [
        [(" ".join(["word"] * rng.randint(1, 300)), rng.randint(1, 24)) for _ in range(REQUESTS_EACH)]
        for _ in range(CLIENTS)
    ]

    async def one_client(client: openai.AsyncOpenAI, plan) -> list[tuple[int, int, str, int]]:
        """(prompt tokens, completion tokens, finish reason, max_tokens) per request, in turn."""
        results = []
        for text, max_tokens in plan:
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            finish, usage = None, None
            async for chunk in stream:
                if chunk.choices:
                    finish = chunk.choices[0].finish_reason or finish
                usage = chunk.usage or usage
            results.append((usage.prompt_tokens, usage.completion_tokens, finish, max_tokens))
        return results

    async def run() -> list[list[tuple[int, int, str, int]]]:
        client = openai.AsyncOpenAI(
            base_url=f"{sturdy.base_url}/v1", api_key="unused", max_retries=0, timeout=300
        )
        async with client:
            return await asyncio.gather(*(one_client(client, plan) for plan in plans))

    before = samples(sturdy_http)
    results = asyncio.run(run())
    after = samples(sturdy_http)

    prompt_tokens = {}
    for text in {text for plan in plans for text, _ in plan}:
        messages = [{"role": "user", "content": text}]
        prompt_tokens[text] = sturdy_http.post("/tokenize", json={"messages": messages}).json()["count"]
    for plan, got in zip(plans, results, strict=True):
        for (text, max_tokens), (prompt, completion, finish, _) in zip(plan, got, strict=True):
            assert prompt == prompt_tokens[text] and completion == max_tokens and finish == "length"
    wait_until(lambda: engine_idle(sturdy_http), timeout=10)

    made = CLIENTS * REQUESTS_EACH
    generated = sum(max_tokens for plan in plans for _, max_tokens in plan)
    grew = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert grew["pyinfer:e2e_request_latency_seconds_count"] == made
    assert grew["pyinfer:time_to_first_token_seconds_count"] == made
    assert grew["pyinfer:generation_tokens_total"] == generated
    assert grew["pyinfer:prompt_tokens_total"] == sum(p for r in results for p, *_ in r)
    for name, value in before.items():  # counters and histogram counts never go back
        if name.endswith(("_total", "_count", "_bucket")):
            assert after[name] >= value, name
    tally["requests served under load"] += made
    tally["tokens generated under load"] += generated
