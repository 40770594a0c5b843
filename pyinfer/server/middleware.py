"""ASGI middleware: an X-Request-Id on every response, one structured access-log line per request, and what
a request held released when its response ends; per-key request limits with OpenAI's x-ratelimit-*
headers on the generation routes; the body limit.

Plain ASGI rather than BaseHTTPMiddleware, so streaming replies and disconnect detection pass untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyinfer.server.errors import OpenAIError, from_exception, rate_limited, routes_at
from pyinfer.server.prometheus import ServerMetrics
from pyinfer.server.rate_limits import ANONYMOUS, RateLimiter, RateLimitExceeded

access_log = logging.getLogger("pyinfer.access")
# A client's X-Request-Id is kept if it is one word of these: a space would let it write fields of its own
# (`key=...`) into the text access line
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@#-]{1,128}")  # `#`: Kong's uuid#counter
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class InternalErrorMiddleware:
    """An exception no handler knows becomes a 500 in OpenAI's shape here, and goes no further. Starlette's
    last-resort handler would re-raise it after replying, and uvicorn would then close the client's
    keep-alive connection under its next request. One raised after the response began still goes up."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception as e:
            if started:
                raise
            await from_exception(e).response()(scope, receive, send)  # logs it with its traceback


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        routes: list[BaseRoute],
        metrics: ServerMetrics | None = None,
        log_prompts: bool = False,
        log_format: str = "text",
    ):
        self.app = app
        self.routes = routes  # the app's, to name what a middleware refused before routing
        self.metrics = metrics  # counts requests by method, route and status
        self.log_prompts = log_prompts  # the access log carries prompt and output text too
        # text lines carry them in the line, as JSON strings (a newline in a prompt stays on the line);
        # JSON records as fields of their own
        self.prompts_in_line = log_prompts and log_format == "text"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        start = time.perf_counter()
        status = 499  # unless a response starts: the client left first
        whole = False  # the response's last body part was sent

        async def send_with_id(message: Message) -> None:
            nonlocal status, whole
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                whole = True

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            for release in state.pop("at_end", []):  # what the request held until its response ended
                release()
            if status == 499 and "refused_status" in state:  # the server answered it (http_protocol.py)
                status = state["refused_status"]
            ms = (time.perf_counter() - start) * 1e3
            route = self._route_template(scope)
            if self.metrics is not None:
                method = scope["method"] if scope["method"] in HTTP_METHODS else "other"  # bounded labels
                self.metrics.http_requests.labels(method, route, str(status)).inc()
                if status in (401, 429):
                    key = getattr(state.get("api_key", ANONYMOUS if status == 429 else None), "name", "")
                    self.metrics.key_refusals.labels(key, str(status)).inc()
            self._log(scope, route, status, ms, request_id, cut_off=status != 499 and not whole)

    def _route_template(self, scope: Scope) -> str:
        """The route's template, not the path (a bounded set of metric labels): the one the router
        chose, or for a request a middleware refused before routing, the one it would have chosen."""
        route = scope.get("route")
        if route is None:  # PARTIAL: the path matches but not the method
            route = next(iter(routes_at(self.routes, scope)), None)
        return getattr(route, "path", "unmatched")

    def _log(self, scope: Scope, route: str, status: int, ms: float, request_id: str, cut_off: bool) -> None:
        """One access line; `cut_off`: the response began but never ended (the client left mid-stream, or
        the server stopped it)."""
        state = scope["state"]
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(ms, 1),
            "request_id": request_id,
            "client": client_address(scope.get("client")),
            "api_key": getattr(state.get("api_key"), "name", None),  # its name, never the key
        }
        if cut_off:
            fields["cut_off"] = True
        generations = state.get("generations", [])
        if generations:  # what was sent to the engine (tokens, never text unless asked for)
            fields["prompt_tokens"] = sum(len(g.prompt_token_ids) for g in generations)
            fields["completion_tokens"] = sum(c.num_tokens for g in generations for c in g.choices)
            if errors := sorted({g.error for g in generations if g.error}):  # a stream ended by an error
                fields["error"] = ",".join(errors)
            if self.log_prompts:
                fields["prompts"] = [g.prompt_text() for g in generations]
                fields["outputs"] = [c.text for g in generations for c in g.choices]
        key = f" key={fields['api_key']}" if fields["api_key"] else ""
        tokens = f" tokens={fields['prompt_tokens']}+{fields['completion_tokens']}" if generations else ""
        error = f" error={fields['error']}" if "error" in fields else ""
        texts = ""  # prompts and outputs as JSON strings: control characters escaped, letters kept
        if self.prompts_in_line and generations:
            texts = "".join(
                f" {name}={json.dumps(fields[name], ensure_ascii=False)}" for name in ("prompts", "outputs")
            )
        # a probe's or a scrape's success, every few seconds from kubelet and Prometheus, at debug level:
        # at info it would be most of the log; a failed one stays at info
        level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
        access_log.log(
            level,
            "%s %s %d%s %.1fms request_id=%s client=%s%s%s%s%s",
            scope["method"],
            scope["path"],
            status,
            " cut off" if cut_off else "",
            ms,
            request_id,
            fields["client"] or "-",
            key,
            tokens,
            error,
            texts,
            extra={"fields": fields},
        )


def client_address(client: tuple[str, int] | None) -> str | None:
    """`host:port` of the client of an ASGI scope (or a protocol), None where unknown."""
    return f"{client[0]}:{client[1]}" if client else None


QUIET_ROUTES = ("/health", "/ready", "/metrics")  # whose successes the access log writes at debug level
GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


class RateLimitMiddleware:
    """Takes a request from the caller's allowance on the generation routes (a 429 when it is spent),
    keeps the allowance in the request's state for the routes' token charges (settled when the response
    has ended, by the request's `at_end`), and writes what is left of it into the response's headers.
    A request the server refuses for its own reasons before generating anything for it (a 5xx:
    overloaded, shutting down, its engine gone) is given back, so that a client retrying an overloaded
    server is not then refused by its limit; one that ran (a 504 timeout) counts."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_ROUTES:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            allowance = self.limiter.admit_request(state.get("api_key", ANONYMOUS))
        except RateLimitExceeded as e:
            allowance = self.limiter.allowance(state.get("api_key", ANONYMOUS))
            await rate_limited(e, self.limiter.headers(allowance)).response()(scope, receive, send)
            return
        state["allowance"] = allowance

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] >= 500 and not any(g.started for g in state.get("generations", [])):
                    self.limiter.refund_request(allowance)
                headers = MutableHeaders(scope=message)
                for name, value in self.limiter.headers(allowance).items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_limits)


class BodyLimitMiddleware:
    """A request body larger than `limit` bytes is a 413, before the app reads any of it: by its
    Content-Length, or (sent in chunks) once the chunks pass the limit."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        messages, size = [], 0
        while True:  # chunked: read it all (the app would), refusing once it passes the limit
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = OpenAIError(
            413, f"The request body is larger than {self.limit} bytes.", code="request_too_large"
        )
        await error.response()(scope, receive, send)
