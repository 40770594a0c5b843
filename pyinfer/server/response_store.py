"""Stored Responses: kept in memory for GET, cancel and `previous_response_id`, bounded by count and age."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyinfer.server.protocol_responses import ResponseObject
from pyinfer.server.protocol_tools import template_tool_call


@dataclass
class StoredResponse:
    """A response as GET shows it, the conversation it answered, and how to stop it while it runs."""

    response: ResponseObject
    messages: list[dict[str, Any]]  # chat-template messages before the reply, without instructions
    owner: str | None = None  # the API key's name that created it: only that key sees it
    stop: Callable[[], None] | None = None  # aborts its engine request; None once it has finished
    stored_at: float = field(default_factory=time.monotonic)

    def conversation(self) -> list[dict[str, Any]]:
        """The messages a continuation starts from: the earlier input, then this reply and its calls."""
        reply: dict[str, Any] = {"role": "assistant", "content": self.response.output_text}
        calls = [
            template_tool_call(item.call_id, item.name, item.arguments)
            for item in self.response.output
            if item.type == "function_call"
        ]
        if calls:
            reply["tool_calls"] = calls
        return [*self.messages, reply]


class ResponseStore:
    def __init__(self, max_count: int, max_age: float):
        self.max_count = max_count
        self.max_age = max_age  # seconds
        self._responses: OrderedDict[str, StoredResponse] = OrderedDict()  # oldest first

    def put(self, stored: StoredResponse) -> None:
        """Keep `stored`, dropping the oldest responses beyond the count."""
        self._expire()
        self._responses[stored.response.id] = stored
        while len(self._responses) > self.max_count:
            self._responses.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        return self._responses.get(response_id)

    def delete(self, response_id: str) -> StoredResponse | None:
        self._expire()
        return self._responses.pop(response_id, None)

    def _expire(self) -> None:
        deadline = time.monotonic() - self.max_age
        while self._responses and next(iter(self._responses.values())).stored_at < deadline:
            self._responses.popitem(last=False)
