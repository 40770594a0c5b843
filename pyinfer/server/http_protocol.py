"""uvicorn's httptools protocol with the bounds an open port needs and it lacks: a request whose line and
headers pass MAX_HEAD_BYTES is answered 431, and one whose next bytes (of its head or its body) do not
come within the read timeout is answered 408; either closes the connection, as nginx does. Without them
a client could grow the process by a header it never ends, or hold connections open with requests it
never finishes, before any key is checked."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 2**10  # nginx's large_client_header_buffers allow 32 KiB a line, 4 of them
REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}
# After a refusal the connection reads (and drops) what the client still sends, for at most this long,
# before it closes: a close with unread bytes is a reset, which can destroy the refusal unread
LINGER_S = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, read_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read_timeout_s = read_timeout_s
        self._head_bytes = 0  # of the request head being read; 0 once it is whole
        self._in_body = False  # a request's head is whole and its body is not
        self._read_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered 408 or 431: what still comes is dropped until the close

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_body:
            self._head_bytes += len(data)
        self._arm_read_timer()
        super().data_received(data)  # whole heads and bodies met in `data` reset the two above
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, f"the request's line and headers pass {MAX_HEAD_BYTES // 2**10} KiB")

    def on_headers_complete(self) -> None:
        self._head_bytes, self._in_body = 0, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_read_timer()
        super().on_message_complete()

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

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self._refused:
            return
        # not the client's wait: reading paused (a body the app has not taken yet, a pipelined request),
        # or a request's head begun while the one before it is still being answered
        answering = not self._in_body and self.cycle is not None and not self.cycle.response_complete
        if self.flow.read_paused or answering:
            self._arm_read_timer()
            return
        if self.cycle is not None and self._in_body and self.cycle.response_started:
            self.transport.close()  # its answer began: no status can be sent now
            return
        self._refuse(408, f"the request's next bytes did not come within {self.read_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """An OpenAI-style error with `status`, then the connection closed."""
        log.info("%s from %s: %s; connection closed", status, _address(self.client), message)
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        body = json.dumps({"error": error}).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self._refused = True
        self._cancel_read_timer()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def _address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"
