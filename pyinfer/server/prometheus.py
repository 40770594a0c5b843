"""Prometheus metrics, under the names operators know from vLLM with our prefix, in the API process's
own registry: per-request figures observed as replies finish, HTTP requests by method, route and status, and
the engine's queues and caches read from its stats (over the existing channel) at each scrape."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pyinfer.server.generation import Generation

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKEN_GAP_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
)
FINISH_REASONS = ("stop", "length", "tool_calls", "abort")  # a choice's, as the API reports them
# No `_created` series: only one process's registry has them (several API processes' shared files do not),
# so they would nearly double the series and make dashboards differ by --api-server-count; vLLM leaves
# them out too
disable_created_metrics()

SHED_CODES = ("queue_full", "queue_full_tokens")  # the error codes of load shedding's 503s


class ServerMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(f"pyinfer:{name}", doc, [*labels, *extra], registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"pyinfer:{name}", doc, labels, buckets=buckets, registry=self.registry)

        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of finished requests.")
        self.generation_tokens = counter("generation_tokens", "Generated tokens of finished requests.")
        self.request_success = counter(
            "request_success", "Finished choices, by why they finished.", ("finished_reason",)
        )
        self.ttft = histogram("time_to_first_token_seconds", "Time to first token.", LATENCY_BUCKETS)
        self.inter_token = histogram(
            "inter_token_latency_seconds",
            "Time between a choice's tokens, as the server sees them.",
            TOKEN_GAP_BUCKETS,
        )
        self.e2e = histogram("e2e_request_latency_seconds", "Whole request latency.", LATENCY_BUCKETS)
        self.queue_time = histogram(
            "request_queue_time_seconds", "Time waiting in the engine's queue.", LATENCY_BUCKETS
        )
        self.rejections = counter(
            "request_rejections", "Requests refused for a full queue, by code.", ("code",)
        )
        self.key_refusals = Counter(
            "pyinfer:api_key_refusals",
            "Requests refused for their key: 401 (no key or an unknown one: key empty) and 429 (over "
            "the key's limits), by the key's name, never the key.",
            ["key", "status"],
            registry=self.registry,
        )
        self.tool_call_failures = counter(  # the API processes' own count, summed over several
            "num_tool_call_parse_failures", "Tool-call markup that did not parse as a call of a given tool."
        ).labels(model_name)
        # This model's series made now, at zero: Prometheus's advice (a series absent until its first event
        # breaks rate() and alerts), and with several API processes making one writes it into the
        # process's shared-memory file, which took milliseconds of its first clients' time
        self._prompt_tokens = self.prompt_tokens.labels(model_name)
        self._generation_tokens = self.generation_tokens.labels(model_name)
        self._finished = {
            reason: self.request_success.labels(model_name, reason) for reason in FINISH_REASONS
        }
        self._ttft = self.ttft.labels(model_name)
        self._token_gap = self.inter_token.labels(model_name)
        self._e2e = self.e2e.labels(model_name)
        self._queue_time = self.queue_time.labels(model_name)
        self.sheds = {code: self.rejections.labels(model_name, code) for code in SHED_CODES}
        self.key_refusals.labels("", "401")  # no key, or an unknown one
        self.http_requests = Counter(
            "pyinfer:http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def refused_unread(self, status: int) -> None:
        """A request the HTTP layer refused before its head was whole (a 431 or 408): no method or route
        of its own is known."""
        self.http_requests.labels("other", "unmatched", str(status)).inc()

    def observe(self, gen: Generation, seconds: float) -> None:
        """A finished generation's figures (its `seconds` from arrival to its last token)."""
        self._prompt_tokens.inc(len(gen.prompt_token_ids))
        self._generation_tokens.inc(sum(c.num_tokens for c in gen.choices))
        if gen.choices[0].first_token_at is not None:  # one that never got a token has no such times
            first = gen.choices[0].timings(gen.sent_at)
            self._ttft.observe(first.time_to_first_token_ms / 1e3)
            self._queue_time.observe(first.queue_ms / 1e3)
        self._e2e.observe(seconds)
        for choice in gen.choices:
            reason = choice.finish_reason or "abort"
            # a reason not made at start gets its series now: a KeyError here, in a reply's last step,
            # would hide whatever ended it
            finished = self._finished.get(reason) or self.request_success.labels(self.model_name, reason)
            finished.inc()

    def token_gap(self, seconds: float) -> None:
        """Every token of every stream passes here: the labelled child is looked up once."""
        self._token_gap.observe(seconds)

    def engine_collector(
        self, snapshot: dict[str, int | float], block_size: int, num_blocks: int
    ) -> Collector:
        return _EngineCollector(self.model_name, snapshot, block_size, num_blocks)

    def exposition(self, engine: Collector | None) -> bytes:
        """The text format of every metric, the engine's from its latest stats (None: not ready)."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one of several API processes: all of theirs
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        if engine is None:
            return generate_latest(registry)
        registry.register(engine)
        try:
            return generate_latest(registry)
        finally:
            registry.unregister(engine)


# (family, metric name, engine stat, help) of what the engine's stats snapshot holds
ENGINE_METRICS = [
    (GaugeMetricFamily, "num_requests_running", "num_requests_running", "Sequences in the running batch."),
    (GaugeMetricFamily, "num_requests_waiting", "num_requests_waiting", "Sequences waiting to be scheduled."),
    (GaugeMetricFamily, "kv_cache_usage_perc", "kv_cache_usage", "KV-cache use, 0 to 1."),
    (
        GaugeMetricFamily,
        "engine_stats_age_seconds",
        "stats_age_s",
        "Age of these engine figures: 0 unless a long engine step held its answer back past the scrape's "
        "wait (counted from ready if the engine has answered none since).",
    ),
    *(
        (CounterMetricFamily, name, name, doc)
        for name, doc in {
            "prefix_cache_queries": "Prompt tokens looked up in the prefix cache.",
            "prefix_cache_hits": "Prompt tokens found in the prefix cache.",
            "num_preemptions": "Sequences preempted for KV-cache space.",
            "num_constrained_requests": "Requests decoded under a grammar (structured output, tools).",
            "grammar_compile_seconds": "Seconds spent compiling grammars, off the step loop.",
            "kv_events_batches": "KV-cache event batches published (--kv-events-endpoint).",
            "kv_events_dropped": "KV-cache event batches dropped for a full send queue (kept for replay).",
        }.items()
    ),
]


class _EngineCollector(Collector):
    """The engine's gauges and cumulative counters, from one stats snapshot."""

    def __init__(self, model: str, stats: dict[str, int | float], block_size: int, num_blocks: int):
        self.model, self.stats, self.block_size, self.num_blocks = model, stats, block_size, num_blocks

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for kind, name, stat, doc in ENGINE_METRICS:
            family = kind(f"pyinfer:{name}", doc, labels=["model_name"])
            family.add_metric([self.model], self.stats.get(stat, 0))
            yield family
        info = GaugeMetricFamily(
            "pyinfer:cache_config_info", "The KV cache's layout.", labels=["block_size", "num_gpu_blocks"]
        )
        info.add_metric([str(self.block_size), str(self.num_blocks)], 1)
        yield info
