"""Per-key rate limits on requests and tokens a minute, with OpenAI's headers and 429s.

Each key (by name; everyone shares one allowance when no keys are set) has two buckets that refill
continuously to their per-minute limit. A request takes one request at the door and, once its prompt
is tokenized, its prompt plus `max_tokens` from the token bucket (the prompt alone without
`max_tokens`); when it ends, however it ends, the charge is settled against what it used: the unused
part comes back, tokens past the charge are taken (the bucket may go into debt). Every response carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; a request
over a limit gets a 429 with `retry-after` and `retry-after-ms`, which the `openai` client waits out.
(A hand-written bucket rather than the `limits` package: charges here are corrected after the fact.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pyinfer.server.auth import ApiKey

ANONYMOUS = ApiKey("anonymous")  # who every request is when the server has no keys
RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
] + ["retry-after", "retry-after-ms"]  # for CORS: what a browser page may read


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

    def settle(self, amount: float) -> None:
        """Give back `amount` (take it, where negative: the level may go below zero)."""
        self._refill()
        self.level = min(self.limit, self.level + amount)

    def resized(self, limit: int) -> Bucket:
        """This bucket under a new limit (a key file edited), keeping what is spent."""
        bucket = Bucket(limit)
        self._refill()
        bucket.level = min(limit, self.level)
        return bucket

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
        self.too_large = requested is not None and requested > limit  # waiting will not help
        if self.too_large:
            message = f"Request too large: {requested} {kind} asked for, the limit is {limit} per minute."
        else:
            message = f"Rate limit reached for {kind} per minute: limit {limit}. Please try again in {duration(wait)}."
        super().__init__(message)
        self.kind = kind  # requests | tokens
        self.wait = wait


class RateLimiter:
    """The allowances by key name. Used from the event loop only: no locks."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.defaults = (requests_per_minute, tokens_per_minute)
        self._allowances: dict[str, Allowance] = {}

    def allowance(self, key: ApiKey) -> Allowance:
        """The key's buckets: its own limits where the key file gives them, else the server's."""
        rpm = key.requests_per_minute or self.defaults[0]
        tpm = key.tokens_per_minute or self.defaults[1]
        allowance = self._allowances.setdefault(key.name, Allowance(None, None))
        allowance.requests = _with_limit(allowance.requests, rpm)
        allowance.tokens = _with_limit(allowance.tokens, tpm)
        return allowance

    def admit_request(self, key: ApiKey) -> Allowance:
        """Take one request from the key's allowance, or raise RateLimitExceeded."""
        allowance = self.allowance(key)
        if allowance.requests is not None and (wait := allowance.requests.take(1)):
            raise RateLimitExceeded("requests", allowance.requests.limit, wait)
        return allowance

    def charge_tokens(self, allowance: Allowance, tokens: int) -> None:
        if allowance.tokens is not None and (wait := allowance.tokens.take(tokens)):
            raise RateLimitExceeded("tokens", allowance.tokens.limit, wait, requested=tokens)

    def settle_tokens(self, allowance: Allowance, charged: int, used: int) -> None:
        if allowance.tokens is not None and charged != used:
            allowance.tokens.settle(charged - used)

    def headers(self, allowance: Allowance) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, bucket in (("requests", allowance.requests), ("tokens", allowance.tokens)):
            if bucket is not None:
                out.update(bucket.headers(kind))
        return out


def _with_limit(bucket: Bucket | None, limit: int | None) -> Bucket | None:
    if limit is None:
        return None
    if bucket is None:
        return Bucket(limit)
    return bucket if bucket.limit == limit else bucket.resized(limit)
