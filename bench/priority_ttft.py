"""Time to first token of an urgent request, idle and under load, on a server run with
`--scheduling-policy priority`: how near its idle figure a priority keeps it.

    python bench/priority_ttft.py --base-url http://127.0.0.1:8000 [--load 32] [--probes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx


async def ttft(http: httpx.AsyncClient, priority: int) -> float:
    """Seconds to the first streamed token of a short greedy completion."""
    body = {"prompt": "The capital of France is", "max_tokens": 2, "temperature": 0, "stream": True}
    start = time.perf_counter()
    async with http.stream("POST", "/v1/completions", json={**body, "priority": priority}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - start
    raise RuntimeError("no token came")


async def background(http: httpx.AsyncClient, i: int, stop: asyncio.Event) -> None:
    """A long low-priority stream, again and again until told to stop."""
    body = {"prompt": f"Story {i}: " + "once " * 100, "max_tokens": 200, "ignore_eos": True, "stream": True}
    while not stop.is_set():
        async with http.stream("POST", "/v1/completions", json={**body, "priority": 10}) as r:
            async for _ in r.aiter_lines():
                if stop.is_set():
                    break


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--load", type=int, default=32, help="low-priority streams running meanwhile")
    parser.add_argument("--probes", type=int, default=5)
    args = parser.parse_args()
    limits = httpx.Limits(max_connections=args.load + 8)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=300, limits=limits) as http:
        await ttft(http, 0)  # warm
        idle = [await ttft(http, 0) for _ in range(args.probes)]
        stop = asyncio.Event()
        load = [asyncio.create_task(background(http, i, stop)) for i in range(args.load)]
        await asyncio.sleep(5)  # the batch fills
        running = (await http.get("/v1/engine/stats")).json()["num_requests_running"]
        same = [await ttft(http, 10) for _ in range(args.probes)]  # as urgent as the load: in turn
        urgent = [await ttft(http, -1) for _ in range(args.probes)]
        stop.set()
        await asyncio.gather(*load)
    print(f"{args.load} low-priority streams ({running} running when measured), {args.probes} probes each")
    for name, times in (("idle", idle), ("under load, same priority", same), ("under load, urgent", urgent)):
        print(
            f"  TTFT {name:<28} median {statistics.median(times) * 1e3:8.1f} ms   max {max(times) * 1e3:8.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
