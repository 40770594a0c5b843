"""Per-key rate limits on requests and tokens a minute, with OpenAI's headers and 429s.

Each key (by name; everyone shares one allowance when no keys are set) has two buckets that refill
continuously to their per-minute limit. A request takes one request at the door and, once its prompt
is tokenized, its prompt plus `max_tokens` from the token bucket; what it did not generate is given back
when it ends. Every response carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; a request
over a limit gets a 429 with `retry-after` and `retry-after-ms`, which the `openai` client waits out.
(A hand-written bucket rather than the `limits` package: charges here are corrected after the fact.)
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from pyinfer.server.auth import ApiKey

ANONYMOUS = ApiKey("anonymous")  # who every request is when the server has no keys


class Bucket:
    """`limit` units a minute, refilled continuously, never above `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.level = float(limit)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.stamp) * self.limit / 60)
        self.stamp = now

    def take(self, amount: float) -> float:
        """Take `amount` if it is there (returns 0), else the seconds until it will be."""
        self._refill()
        if amount <= self.level:
            self.level -= amount
            return 0.0
        return (amount - self.level) * 60 / self.limit

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.limit, self.level + amount)

    def headers(self, kind: str) -> dict[str, str]:
        self._refill()
        reset = (self.limit - self.level) * 60 / self.limit
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": duration(reset),
        }


def duration(seconds: float) -> str:
    """As OpenAI writes its resets: 1s, 6m0s, 20ms."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass
class Allowance:
    """One key's two buckets (None: no limit of that kind)."""

    requests: Bucket | None
    tokens: Bucket | None


class RateLimitExceeded(Exception):
    def __init__(self, kind: str, limit: int, wait: float, requested: int | None = None):
        if requested is not None and requested > limit:  # waiting will not help
            message = f"Request too large: {requested} {kind} asked for, the limit is {limit} per minute."
        else:
            message = f"Rate limit reached for {kind} per minute: limit {limit}. Please try again in {duration(wait)}."
        super().__init__(message)
        self.kind = kind  # requests | tokens
        self.wait = wait


class RateLimiter:
    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.defaults = (requests_per_minute, tokens_per_minute)
        self._allowances: dict[str, Allowance] = {}
        self._lock = threading.Lock()  # tokenizing threads charge too

    def allowance(self, key: ApiKey) -> Allowance:
        """The key's buckets: its own limits where the key file gives them, else the server's."""
        with self._lock:
            allowance = self._allowances.get(key.name)
            rpm = key.requests_per_minute or self.defaults[0]
            tpm = key.tokens_per_minute or self.defaults[1]
            if allowance is None or _limit(allowance.requests) != rpm or _limit(allowance.tokens) != tpm:
                allowance = Allowance(Bucket(rpm) if rpm else None, Bucket(tpm) if tpm else None)
                self._allowances[key.name] = allowance
            return allowance

    def admit_request(self, key: ApiKey) -> Allowance:
        """Take one request from the key's allowance, or raise RateLimitExceeded."""
        allowance = self.allowance(key)
        with self._lock:
            if allowance.requests is not None and (wait := allowance.requests.take(1)):
                raise RateLimitExceeded("requests", allowance.requests.limit, wait)
        return allowance

    def charge_tokens(self, allowance: Allowance, tokens: int) -> None:
        with self._lock:
            if allowance.tokens is not None and (wait := allowance.tokens.take(tokens)):
                raise RateLimitExceeded("tokens", allowance.tokens.limit, wait, requested=tokens)

    def refund_tokens(self, allowance: Allowance, tokens: int) -> None:
        if allowance.tokens is not None and tokens > 0:
            with self._lock:
                allowance.tokens.give_back(tokens)

    def headers(self, allowance: Allowance) -> dict[str, str]:
        with self._lock:
            out: dict[str, str] = {}
            for kind, bucket in (("requests", allowance.requests), ("tokens", allowance.tokens)):
                if bucket is not None:
                    out.update(bucket.headers(kind))
            return out


def _limit(bucket: Bucket | None) -> int | None:
    return bucket.limit if bucket is not None else None
