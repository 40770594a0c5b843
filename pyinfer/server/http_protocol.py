"""uvicorn's httptools protocol with the bounds an open port needs and it lacks, as nginx sets them: a
request whose line and headers pass MAX_HEAD_BYTES is answered 431; one whose head is not whole within
the read timeout of its first byte (or of the connection's opening), or whose body's next bytes do not
come within it, is answered 408; either closes the connection. Without them a client could grow the
process by a header it never ends, or hold connections open with requests it never finishes, before any
key is checked. Bytes that are not HTTP get the same kind of answer: an OpenAI-style 400, counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pyinfer.server.errors import OpenAIError
from pyinfer.server.middleware import client_address

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 2**10  # nginx's large_client_header_buffers allow 32 KiB a line, 4 of them
HEAD_TOO_LARGE = f"the request's line and headers pass {MAX_HEAD_BYTES // 2**10} KiB"
# After a refusal the connection reads (and drops) what the client still sends, for at most this long,
# before it closes: a close with unread bytes is a reset, which can destroy the refusal unread
LINGER_S = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`read_timeout_s`: the head's deadline and the body's longest gap; `on_refusal(status)`: counts a
    request refused before its head was whole (one refused later is counted as its route's)."""

    def __init__(self, *args: Any, read_timeout_s: float, on_refusal: Callable[[int], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout_s = read_timeout_s
        self.on_refusal = on_refusal
        self._head_bytes = 0  # received since the head being read began, for one never ended
        self._in_body = False  # a request's head is whole and its body is not
        self._read_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered 400, 408 or 431 (or about to be): what still comes is dropped
        self._pending: tuple[int, str] | None = None  # a refusal that waits for the answer before it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()  # a connection that never sends a byte is timed out too

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_body:
            self._arm_read_timer()  # the body's bound is on the gap between its reads
        else:
            self._head_bytes += len(data)
        super().data_received(data)  # a head made whole in `data` resets the count
        if self._head_bytes > MAX_HEAD_BYTES and not self._refused:
            self._refuse(431, HEAD_TOO_LARGE)

    # Once refused, the rest of the bytes already being parsed make no request: uvicorn's callbacks would
    # look for one
    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._read_timer is None:  # the head's deadline runs from its first byte
            self._arm_read_timer()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_bytes = 0
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > MAX_HEAD_BYTES:  # whole, yet too large: it is not served
            self._refuse(431, HEAD_TOO_LARGE)
            return
        self._in_body = True
        self._arm_read_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_body = False
        self._cancel_read_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP (a plain-text 400, counted nowhere), as the other
        refusals are: in OpenAI's shape, logged, counted, the connection closed."""
        self._refuse(400, "the request is not valid HTTP")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._pending is not None and not self._answering():  # after every request before it
            self._answer(*self._pending)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _answering(self) -> bool:
        """Whether an answer to an earlier request on this connection is still under way."""
        return not self._in_body and self.cycle is not None and not self.cycle.response_complete

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self._refused:
            return
        # not the client's wait: reading paused (a body the app has not taken yet, a pipelined request),
        # or a pipelined request's head begun while the one before it is still being answered
        if self.flow.read_paused or self._answering():
            self._arm_read_timer()
            return
        self._refuse(408, f"the request did not arrive within {self.read_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """An OpenAI-style error with `status`, after the answer under way if there is one; then the
        connection closes. A request whose body it cuts short is told its client left, and is logged and
        counted with `status`."""
        self._refused = True
        self._cancel_read_timer()
        if self._in_body:
            self.cycle.scope["state"]["refused_status"] = status
            self.cycle.disconnected = True  # the app stops waiting for the body at once
            self.cycle.message_event.set()
            if self.cycle.response_started:  # it answered already: no status can be sent now
                self.transport.close()
                return
        else:
            self.on_refusal(status)
        log.info("%d to %s: %s; connection closed", status, client_address(self.client) or "-", message)
        if self._answering():
            self._pending = (status, message)
        else:
            self._answer(status, message)

    def _answer(self, status: int, message: str) -> None:
        response = OpenAIError(status, message).response()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        head += [f"{name}: {value}" for name, value in response.headers.items() if name != "connection"]
        self.transport.write(("\r\n".join([*head, "connection: close", "", ""])).encode() + response.body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
