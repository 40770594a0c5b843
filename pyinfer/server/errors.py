"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, with fitting statuses."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from pyinfer.engine.core_client import EngineDeadError, RequestRejected
from pyinfer.sampling_params import SamplingParamsError
from pyinfer.server.protocol import ErrorDetail, ErrorResponse
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


def unavailable(message: str, code: str) -> OpenAIError:
    return OpenAIError(503, message, type="server_error", code=code)


def rate_limited(e: RateLimitExceeded, headers: dict[str, str]) -> OpenAIError:
    """A 429 as OpenAI sends it: type requests or tokens, and when to try again (which its client honours);
    a request no wait would admit tells the client not to retry."""
    if e.too_large:
        wait = {"x-should-retry": "false"}
    else:
        wait = {"retry-after": str(math.ceil(e.wait)), "retry-after-ms": str(math.ceil(e.wait * 1000))}
    return OpenAIError(429, str(e), type=e.kind, code="rate_limit_exceeded", headers={**headers, **wait})


def from_validation_error(e: ValidationError | RequestValidationError) -> OpenAIError:
    """The first problem pydantic found, as a 400 naming the top-level field."""
    first = e.errors()[0]
    loc = [str(part) for part in first["loc"] if part != "body"]
    if first["type"] == "json_invalid":
        return bad_request(f"We could not parse the JSON body of your request: {first['msg']}")
    if first["type"] == "extra_forbidden":  # OpenAI's own words
        return bad_request(f"Unrecognized request argument supplied: {'.'.join(loc)}", param=loc[0])
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{'.'.join(loc)}'", param=loc[0] if loc else None)
    where = f"{'.'.join(loc)}: " if loc else ""
    return bad_request(f"Invalid request: {where}{first['msg']}", param=loc[0] if loc else None)


def from_exception(e: Exception) -> OpenAIError:
    """The OpenAI error for an exception raised while serving a request."""
    match e:
        case OpenAIError():
            return e
        case SamplingParamsError() | RequestRejected():
            code = "context_length_exceeded" if "maximum context length" in str(e) else None
            return bad_request(str(e), param=e.param, code=code)
        case EngineDeadError():
            return OpenAIError(500, str(e), type="server_error", code="engine_dead")
        case ValidationError():
            return from_validation_error(e)
        case ClientDisconnected():  # nobody reads it; the access log shows 499 as nginx does
            return OpenAIError(499, "client disconnected", code="client_disconnected")
    log.exception("internal error", exc_info=e)
    return OpenAIError(500, f"internal server error: {type(e).__name__}", type="server_error")


def install_error_handlers(app: FastAPI) -> None:
    async def openai_error(request: Request, e: Exception) -> JSONResponse:
        return from_exception(e).response()

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        return from_validation_error(e).response()

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return OpenAIError(e.status_code, str(e.detail), type=kind).response()

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    for exc in (
        OpenAIError,
        SamplingParamsError,
        RequestRejected,
        EngineDeadError,
        ClientDisconnected,
    ):  # anything else: InternalErrorMiddleware
        app.add_exception_handler(exc, openai_error)
