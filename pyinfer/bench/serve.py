"""Serving load against any OpenAI-compatible endpoint: TTFT, TPOT, ITL percentiles and throughput."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import psutil
from tqdm import tqdm

from pyinfer.bench.common import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000 (with or without /v1)")
    p.add_argument("--model", default=None, help="model name to send (default: the first of /v1/models)")
    p.add_argument(
        "--endpoint",
        choices=["completions", "chat"],
        default="completions",
        help="completions sends token-id prompts of exact length; chat sends text",
    )
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--range-ratio", type=float, default=0.0, help="lengths uniform in len*(1±ratio)")
    p.add_argument("--prefix-len", type=int, default=0, help="tokens of a prefix shared by every prompt")
    p.add_argument(
        "--vocab-range", type=int, nargs=2, default=[1000, 20000], help="token ids drawn from here"
    )
    p.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson arrivals per second")
    p.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos")
    p.add_argument("--api-key", default=None)
    p.add_argument(
        "--compare-url",
        default=None,
        help="a second endpoint (e.g. llama-server) run with the same prompts after the first; prints ratios "
        "(--output-json then holds {'this': ..., 'compared': ...})",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed requests first, with prompts unrelated to the timed ones (no prefix-cache hits)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="a local server's process: prints the CPU time it and each of its child processes (the engine "
        "core) spent in the timed run, per output token",
    )
    p.add_argument("--output-json", default=None)


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)


def _prompts(args: argparse.Namespace) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    lo, hi = args.vocab_range

    def length(mean: int) -> int:
        return max(1, rng.randint(int(mean * (1 - args.range_ratio)), int(mean * (1 + args.range_ratio))))

    prefix = [rng.randrange(lo, hi) for _ in range(args.prefix_len)]
    return [
        (prefix + [rng.randrange(lo, hi) for _ in range(length(args.input_len))], length(args.output_len))
        for _ in range(args.num_prompts)
    ]


WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "it",
    "an",
    "be",
    "this",
    "which",
    "or",
    "are",
]


def _body(args: argparse.Namespace, model: str, prompt: list[int], max_tokens: int) -> tuple[str, dict]:
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if not args.no_ignore_eos:
        body["ignore_eos"] = True
    if args.endpoint == "completions":
        return "/completions", {**body, "prompt": prompt}
    text = " ".join(WORDS[t % len(WORDS)] for t in prompt)  # about one token a word
    return "/chat/completions", {**body, "messages": [{"role": "user", "content": text}]}


async def _one(client: httpx.AsyncClient, path: str, body: dict) -> Result:
    res = Result()
    start = last = time.perf_counter()
    chunks = 0
    try:
        async with client.stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if msg.get("usage"):
                    res.prompt_tokens = msg["usage"].get("prompt_tokens", 0)
                    res.output_tokens = msg["usage"].get("completion_tokens", 0)
                choice = (msg.get("choices") or [{}])[0]
                piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    if chunks == 0:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last, chunks = now, chunks + 1
        res.latency = time.perf_counter() - start
        res.output_tokens = res.output_tokens or chunks
        res.ok = chunks > 0
        if not res.ok:
            res.error = "no tokens received"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


def _cpu_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of a process and of each of its children, by name and pid."""
    if pid is None:
        return {}
    server = psutil.Process(pid)
    seconds = {}
    for proc in [server, *server.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            name = "server" if proc.pid == pid else f"child {proc.pid} ({' '.join(proc.cmdline()[1:3])[:40]})"
            seconds[name] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


async def _run(args: argparse.Namespace, base_url: str) -> tuple[list[Result], float, str, dict[str, float]]:
    base = base_url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=None, limits=limits) as client:
        model = args.model
        if model is None:
            model = (await client.get("/models")).raise_for_status().json()["data"][0]["id"]
        if args.warmup:
            warm = argparse.Namespace(**{**vars(args), "seed": args.seed + 7919, "num_prompts": args.warmup})
            for prompt, _ in _prompts(warm):
                await _one(client, *_body(args, model, prompt, 4))
        work = _prompts(args)
        gate = asyncio.Semaphore(args.max_concurrency or len(work))
        bar = tqdm(total=len(work), desc="requests", unit="req")
        rng = np.random.default_rng(args.seed)

        async def limited(prompt: list[int], out_len: int) -> Result:
            async with gate:
                res = await _one(client, *_body(args, model, prompt, out_len))
            bar.update(1)
            return res

        cpu_before = _cpu_seconds(args.server_pid)
        start = time.perf_counter()
        tasks = []
        for prompt, out_len in work:
            tasks.append(asyncio.create_task(limited(prompt, out_len)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.exponential(1.0 / args.request_rate))
        results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in _cpu_seconds(args.server_pid).items()}
        bar.close()
    return results, elapsed, model, cpu


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    arr = np.array(values) * 1e3
    return {"mean": float(arr.mean()), **{f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 99)}}


def summarize(results: list[Result], elapsed: float) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpot = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": elapsed,
        "request_throughput": len(ok) / elapsed,
        "output_token_throughput": out_tokens / elapsed,
        "total_token_throughput": (in_tokens + out_tokens) / elapsed,
        "prompt_tokens": in_tokens,
        "output_tokens": out_tokens,
        "ttft_ms": _percentiles([r.ttft for r in ok]),
        "tpot_ms": _percentiles(tpot),
        "itl_ms": _percentiles([x for r in ok for x in r.itl]),
        "e2e_latency_ms": _percentiles([r.latency for r in ok]),
    }


def print_table(s: dict, title: str) -> None:
    print(f"\n{title}")
    print(f"completed {s['completed']}, failed {s['failed']} in {s['duration_s']:.1f}s")
    for e in s["errors"]:
        print(f"  error: {e}")
    print(f"request throughput      {s['request_throughput']:10.2f} req/s")
    print(f"output token throughput {s['output_token_throughput']:10.1f} tok/s")
    print(f"total token throughput  {s['total_token_throughput']:10.1f} tok/s")
    print(f"{'ms':16}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms"):
        row = s[key]
        print(f"{key[:-3].upper():16}" + "".join(f"{row[q]:10.1f}" for q in ("mean", "p50", "p90", "p99")))
    for name, us in s.get("server_cpu_us_per_token", {}).items():
        share = s["server_cpu_share"][name]
        print(f"CPU of {name}: {us:.1f} us per output token, {100 * share:.0f}% of a core")


def _measure(args: argparse.Namespace, base_url: str) -> dict:
    results, elapsed, model, cpu = asyncio.run(_run(args, base_url))
    summary = summarize(results, elapsed)
    tokens = max(summary["output_tokens"], 1)
    summary["server_cpu_us_per_token"] = {name: 1e6 * sec / tokens for name, sec in cpu.items()}
    summary["server_cpu_share"] = {name: sec / elapsed for name, sec in cpu.items()}
    summary.update(
        base_url=base_url,
        model=model,
        endpoint=args.endpoint,
        num_prompts=args.num_prompts,
        input_len=args.input_len,
        output_len=args.output_len,
        request_rate=args.request_rate,
        max_concurrency=args.max_concurrency,
    )
    rate = "inf" if args.request_rate == float("inf") else f"{args.request_rate}/s"
    print_table(
        summary,
        f"{base_url} ({model}): {args.num_prompts} requests, prompt ~{args.input_len}, "
        f"output ~{args.output_len}, rate {rate}, concurrency {args.max_concurrency or 'unlimited'}",
    )
    return summary


def _measure_or_exit(args: argparse.Namespace, base_url: str) -> dict:
    """_measure, exiting with a message where the server cannot be reached or refuses its model list (a
    request that fails once the run is going is counted as failed instead)."""
    try:
        return _measure(args, base_url)
    except httpx.TransportError as e:
        sys.exit(f"pyinfer bench serve: cannot reach {base_url}: {e}")
    except httpx.HTTPStatusError as e:
        sys.exit(
            f"pyinfer bench serve: {base_url} refused its model list: {e.response.status_code} {e.response.text}"
        )


def print_comparison(ours: dict, theirs: dict) -> None:
    """Ratios with 'better' > 1 on every row: throughput ours/theirs, latencies theirs/ours."""
    print(f"\n{'':28}{'this':>12}{'compared':>12}{'ratio':>8}")
    rows = [
        ("output tok/s", ours["output_token_throughput"], theirs["output_token_throughput"], False),
        ("TTFT p50 ms", ours["ttft_ms"]["p50"], theirs["ttft_ms"]["p50"], True),
    ]
    if ours["tpot_ms"]["p50"] and theirs["tpot_ms"]["p50"]:  # none with one output token
        rows += [
            ("TPOT p50 ms", ours["tpot_ms"]["p50"], theirs["tpot_ms"]["p50"], True),
            ("decode tok/s a stream", 1e3 / ours["tpot_ms"]["p50"], 1e3 / theirs["tpot_ms"]["p50"], False),
        ]
    for name, a, b, lower_is_better in rows:
        ratio = (b / a if lower_is_better else a / b) if a and b else float("nan")
        print(f"{name:28}{a:12.1f}{b:12.1f}{ratio:7.2f}x")


def main(args: argparse.Namespace) -> None:
    summary = _measure_or_exit(args, args.base_url)
    if args.compare_url:
        other = _measure_or_exit(args, args.compare_url)
        print_comparison(summary, other)
        summary = {"this": summary, "compared": other}
    write_json(args.output_json, summary)
