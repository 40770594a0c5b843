"""Where a burst's time to first token goes (diagnostic): bursts of N x (LEN -> 1) sent at once to a
running server, each from a new client, each request's latency against the engine's own time to its
first token and its queueing (usage.performance); the difference is the front end and the transport.
python3 bench/gpu/burst_breakdown.py URL [BURSTS] [N] [LEN]"""

import asyncio
import random
import statistics
import sys
import time

import httpx


async def one(client: httpx.AsyncClient, model: str, prompt: list[int]) -> tuple[float, float, float]:
    start = time.perf_counter()
    reply = await client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 1})
    latency = (time.perf_counter() - start) * 1e3
    reply.raise_for_status()
    performance = reply.json()["usage"]["performance"]
    return latency, performance["time_to_first_token_ms"], performance["queue_ms"]


def summary(values: list[float]) -> str:
    return f"{statistics.mean(values):6.1f} / {max(values):6.1f}"


async def main() -> None:
    if not 2 <= len(sys.argv) <= 5:
        sys.exit(__doc__)
    url = sys.argv[1]
    bursts, n, length = (int(a) for a in sys.argv[2:] + ["4", "32", "512"][len(sys.argv) - 2 :])
    async with httpx.AsyncClient(base_url=url) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
    print("ms, mean / max:   latency         engine TTFT     engine queue    front end + transport")
    for burst in range(1, bursts + 1):
        rng = random.Random(burst)
        prompts = [[rng.randrange(100, 30000) for _ in range(length)] for _ in range(n)]
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            results = await asyncio.gather(*(one(client, model, p) for p in prompts))
        latency, engine, queue = (list(column) for column in zip(*results, strict=True))
        rest = [a - b for a, b in zip(latency, engine, strict=True)]
        print(
            f"burst {burst}:         {summary(latency)}   {summary(engine)}   {summary(queue)}   {summary(rest)}"
        )


asyncio.run(main())
