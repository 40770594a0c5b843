"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, with fitting statuses."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from pyinfer.engine.core_client import EngineDeadError, RequestRejected, RequestShed
from pyinfer.sampling_params import SamplingParamsError
from pyinfer.server.protocol import ErrorDetail, ErrorResponse
from pyinfer.server.protocol_base import UNSUPPORTED
from pyinfer.server.rate_limits import RateLimitExceeded

log = logging.getLogger(__name__)


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.detail).model_dump(), status_code=self.status, headers=self.headers
        )


class ClientDisconnected(Exception):
    """The client went away before its reply was ready."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unavailable(message: str, code: str, retry_after_s: int | None = None) -> OpenAIError:
    """A 503; with `retry_after_s`, one the client may retry then (the openai client waits it out)."""
    headers = {"retry-after": str(retry_after_s)} if retry_after_s is not None else None
    return OpenAIError(503, message, type="server_error", code=code, headers=headers)


def overloaded(code: str, why: str) -> OpenAIError:
    """Load shedding's 503 (a full queue), which the client may retry in a moment."""
    return unavailable(f"The server is overloaded: {why}. Retry shortly.", code, retry_after_s=1)


def rate_limited(e: RateLimitExceeded, headers: dict[str, str]) -> OpenAIError:
    """A 429 as OpenAI sends it: type requests or tokens, and when to try again (which its client honours);
    a request no wait would admit tells the client not to retry."""
    if e.too_large:
        wait = {"x-should-retry": "false"}
    else:
        wait = {"retry-after": str(math.ceil(e.wait)), "retry-after-ms": str(math.ceil(e.wait * 1000))}
    return OpenAIError(429, str(e), type=e.kind, code="rate_limit_exceeded", headers={**headers, **wait})


def from_validation_error(e: ValidationError | RequestValidationError) -> OpenAIError:
    """The problem pydantic found, as a 400 naming the top-level field (see validation_problem)."""
    errors = e.errors()
    if errors[0]["type"] == "json_invalid":
        return bad_request(f"We could not parse the JSON body of your request: {errors[0]['msg']}")
    kind, loc, messages = validation_problem(errors)
    param = loc[0] if loc else None
    if kind == "extra_forbidden":  # OpenAI's own words
        return bad_request(f"Unrecognized request argument supplied: {'.'.join(loc)}", param=param)
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{'.'.join(loc)}'", param=param)
    where = f"{'.'.join(loc)}: " if loc else ""
    return bad_request(f"Invalid request: {where}{', or '.join(messages)}", param=param)


def validation_problem(errors: list[Any]) -> tuple[str, list[str], list[str]]:
    """The problem to report among pydantic's errors: (its type, its place without pydantic's union tags,
    what it says). Where a value fits none of a union's kinds, each kind gives its own errors. A kind whose
    `type` tag the value lacks or does not match is passed over where another kind got as deep; then the
    deepest error is chosen (the kind that matched furthest), with the other kinds' messages at its place."""
    untagged = [[p for p in err["loc"] if p != "body" and not _union_tag(p)] for err in errors]
    for i, err in enumerate(errors):  # a value understood but not served: that is the problem, whatever else
        if err["type"] == UNSUPPORTED:
            return err["type"], [str(p) for p in untagged[i]], [err["msg"]]
    mistagged = [
        (err["loc"][:-1], len(untagged[i]) - 1)
        for i, err in enumerate(errors)
        if err["loc"][-1:] == ("type",) and err["type"] in ("literal_error", "missing")
    ]

    def under(i: int, branch: tuple) -> bool:
        return errors[i]["loc"][: len(branch)] == branch

    everything = range(len(errors))
    passed_over = [
        branch
        for branch, depth in mistagged
        if any(len(untagged[j]) >= depth for j in everything if not under(j, branch))
    ]
    kept = [i for i in everything if not any(under(i, b) for b in passed_over)] or list(everything)
    if passed_over and all(
        len(untagged[i]) <= max(d for b, d in mistagged if b in passed_over) for i in kept
    ):
        # the value's `type` is none of the kinds' (an item of a kind not served): say which types there are
        kept = [
            i
            for i in everything
            if errors[i]["loc"][-1:] == ("type",) and errors[i]["type"] == "literal_error"
        ] or kept
    deepest = max(kept, key=lambda i: len(untagged[i]))
    loc = [str(p) for p in untagged[deepest]]
    messages = [errors[i]["msg"] for i in kept if untagged[i] == untagged[deepest]]
    return errors[deepest]["type"], loc, list(dict.fromkeys(messages))


def _union_tag(part: str | int) -> bool:
    """A place pydantic names a union's kind by (str, list[InputText], FunctionCallInput), not a field."""
    return isinstance(part, str) and (
        part[:1].isupper() or "[" in part or part in ("str", "int", "float", "bool")
    )


def from_exception(e: Exception) -> OpenAIError:
    """The OpenAI error for an exception raised while serving a request."""
    match e:
        case OpenAIError():
            return e
        case SamplingParamsError() | RequestRejected():
            code = "context_length_exceeded" if "maximum context length" in str(e) else None
            return bad_request(str(e), param=e.param, code=code)
        case RequestShed():
            return overloaded("queue_full", str(e))
        case EngineDeadError():
            return OpenAIError(500, str(e), type="server_error", code="engine_dead")
        case ValidationError():
            return from_validation_error(e)
        case ClientDisconnected() | ClientDisconnect():  # nobody reads it; logged 499 as nginx does
            return OpenAIError(499, "client disconnected", code="client_disconnected")
    log.exception("internal error", exc_info=e)
    return OpenAIError(500, f"internal server error: {type(e).__name__}", type="server_error")


# OpenAI's APIs that this server does not have, by their paths' first part after /v1/: a client pointed
# here for one of them (LangChain's OpenAIEmbeddings, say) is told so rather than only "not found"
UNSERVED_APIS = frozenset(
    [
        "embeddings",
        "audio",
        "images",
        "moderations",
        "files",
        "uploads",
        "batches",
        "fine_tuning",
        "vector_stores",
        "assistants",
        "threads",
        "realtime",
        "conversations",
        "containers",
        "evals",
        "videos",
    ]
)


def not_found_message(request: Request) -> str:
    """OpenAI's words for a path it does not serve, and which of its APIs the path is, if it is one."""
    message = f"Invalid URL ({request.method} {request.url.path})"
    parts = request.url.path.strip("/").split("/")
    if len(parts) > 1 and parts[0] == "v1" and parts[1] in UNSERVED_APIS:
        message += f": this server does not serve OpenAI's {parts[1].replace('_', ' ')} API"
    return message


def routes_at(routes: list[BaseRoute], scope: Scope) -> list[BaseRoute]:
    """Those of `routes` whose path the request's is, whatever their methods."""
    return [route for route in routes if route.matches(scope)[0] is not Match.NONE]


def allowed_methods(request: Request, routes: list[BaseRoute]) -> list[str]:
    """The methods `routes` (the app's) take at the request's path: the route that refused it names only
    its own, and a path's GET and HEAD may be two routes."""
    return sorted(
        {
            method
            for route in routes_at(routes, request.scope)
            for method in getattr(route, "methods", None) or ()
        }
    )


def install_error_handlers(app: FastAPI, routes: list[BaseRoute]) -> None:
    """OpenAI's error shape for every error the app raises; `routes`: the app's, for a 405's Allow."""

    async def openai_error(request: Request, e: Exception) -> JSONResponse:
        return from_exception(e).response()

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        return from_validation_error(e).response()

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        message = not_found_message(request) if e.status_code == 404 else str(e.detail)
        headers = dict(e.headers or {})
        if e.status_code == 405:  # HTTP requires Allow, naming every method the path takes
            headers["Allow"] = ", ".join(allowed_methods(request, routes))
        return OpenAIError(e.status_code, message, type=kind, headers=headers).response()

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    for exc in (
        OpenAIError,
        SamplingParamsError,
        RequestRejected,
        RequestShed,
        EngineDeadError,
        ClientDisconnected,
        ClientDisconnect,  # starlette's, from a body the client stopped sending
    ):  # anything else: InternalErrorMiddleware
        app.add_exception_handler(exc, openai_error)
