"""Per-key rate limits on requests and tokens a minute, with OpenAI's headers and 429s.

Each key (by name; everyone shares one allowance when no keys are set) has two buckets that refill
continuously to their per-minute limit. A request takes one request at the door and, once its prompt
is tokenized, its prompt plus `max_tokens` from the token bucket (the prompt alone without
`max_tokens`); when it ends, however it ends, the charge is settled against what it used: the unused
part comes back, tokens past the charge are taken (the bucket may go into debt). Every response carries
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; a request over a limit gets a 429 with
`retry-after` and `retry-after-ms`, which the `openai` client waits out.
The buckets live in the database the API processes share (shared_state.py), so that a limit holds for
the server, whichever process a request reaches. (A hand-written bucket rather than the `limits`
package: charges here are corrected after the fact.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from pyinfer.server.auth import ApiKey
from pyinfer.server.shared_state import SharedState

T = TypeVar("T")

ANONYMOUS = ApiKey("anonymous")  # who every request is when the server has no keys
RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
] + ["retry-after", "retry-after-ms"]  # for CORS: what a browser page may read


@dataclass(frozen=True)
class Bucket:
    """`limit` units a minute, refilled continuously, never above `limit`: its `level` at time
    `stamp`. Plain arithmetic: the store reads a bucket, works out the next one and writes it back."""

    limit: int
    level: float
    stamp: float

    @classmethod
    def full(cls, limit: int, now: float) -> Bucket:
        return cls(limit, float(limit), now)

    def at(self, now: float, limit: int | None = None) -> Bucket:
        """This bucket refilled until `now`, under `limit` where that changed (a key file edited),
        keeping what is spent."""
        limit = limit or self.limit
        refilled = self.level + max(0.0, now - self.stamp) * self.limit / 60
        return Bucket(limit, min(limit, refilled), now)

    def take(self, amount: float) -> tuple[Bucket, float]:
        """(the bucket less `amount`, 0) where `amount` is there, else (itself, the seconds until it is)."""
        if amount <= self.level:
            return replace(self, level=self.level - amount), 0.0
        return self, (amount - self.level) * 60 / self.limit

    def settle(self, amount: float) -> Bucket:
        """`amount` given back (taken, where negative: the level may go below zero)."""
        return replace(self, level=min(self.limit, self.level + amount))

    def headers(self, kind: str) -> dict[str, str]:
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


@dataclass(frozen=True)
class Allowance:
    """One key's limits a minute (None: no limit of that kind); its buckets are in the shared state."""

    key: str
    requests: int | None
    tokens: int | None


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
    """The allowances by key name, their buckets in the database the API processes share: each take and
    settle is one short transaction there, so that N processes give out one allowance, not N."""

    def __init__(self, state: SharedState, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.state = state
        self.defaults = (requests_per_minute, tokens_per_minute)

    def allowance(self, key: ApiKey) -> Allowance:
        """The key's limits: its own where the key file gives them, else the server's."""
        return Allowance(
            key.name, key.requests_per_minute or self.defaults[0], key.tokens_per_minute or self.defaults[1]
        )

    def admit_request(self, key: ApiKey) -> Allowance:
        """Take one request from the key's allowance, or raise RateLimitExceeded."""
        allowance = self.allowance(key)
        if allowance.requests is not None and (
            wait := self._take(allowance.key, "requests", allowance.requests, 1)
        ):
            raise RateLimitExceeded("requests", allowance.requests, wait)
        return allowance

    def refund_request(self, allowance: Allowance) -> None:
        """Give back the request admit_request took (the server, not the caller, refused it)."""
        if allowance.requests is not None:
            self._change(allowance.key, "requests", allowance.requests, lambda b: (b.settle(1), None))

    def charge_tokens(self, allowance: Allowance, tokens: int) -> None:
        if allowance.tokens is not None and (
            wait := self._take(allowance.key, "tokens", allowance.tokens, tokens)
        ):
            raise RateLimitExceeded("tokens", allowance.tokens, wait, requested=tokens)

    def settle_tokens(self, allowance: Allowance, charged: int, used: int) -> None:
        if allowance.tokens is not None and charged != used:
            self._change(
                allowance.key, "tokens", allowance.tokens, lambda b: (b.settle(charged - used), None)
            )

    def headers(self, allowance: Allowance) -> dict[str, str]:
        limits = {"requests": allowance.requests, "tokens": allowance.tokens}
        if not any(limits.values()):
            return {}
        now = time.monotonic()
        rows = self.state.db.execute(
            "SELECT kind, per_minute, level, stamp FROM buckets WHERE key = ?", (allowance.key,)
        ).fetchall()
        stored = {kind: Bucket(*rest) for kind, *rest in rows}
        out: dict[str, str] = {}
        for kind, limit in limits.items():
            if limit is not None:
                bucket = stored[kind].at(now, limit) if kind in stored else Bucket.full(limit, now)
                out.update(bucket.headers(kind))
        return out

    def _take(self, key: str, kind: str, limit: int, amount: float) -> float:
        """Take `amount` from the bucket: 0, or the seconds until it will be there (nothing taken)."""
        return self._change(key, kind, limit, lambda b: b.take(amount))

    def _change(self, key: str, kind: str, limit: int, change: Callable[[Bucket], tuple[Bucket, T]]) -> T:
        """Read one bucket, refilled until now, and write back what `change` makes of it: one transaction."""
        now = time.monotonic()
        with self.state.write() as db:
            row = db.execute(
                "SELECT per_minute, level, stamp FROM buckets WHERE key = ? AND kind = ?", (key, kind)
            ).fetchone()
            bucket = Bucket(*row).at(now, limit) if row else Bucket.full(limit, now)
            bucket, result = change(bucket)
            db.execute(
                "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?)",
                (key, kind, bucket.limit, bucket.level, bucket.stamp),
            )
        return result
