"""Stored Responses for GET, DELETE, cancel and `previous_response_id`, bounded by count and age, in the
database every API process shares (shared_state.py): any of them finds what another stored. How to
stop a running response stays in the memory of the process that runs it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyinfer.server.protocol_responses import ResponseObject
from pyinfer.server.protocol_tools import template_tool_call
from pyinfer.server.shared_state import SharedState


@dataclass
class StoredResponse:
    """A response as GET shows it, the conversation it answered, and how to stop it while it runs."""

    response: ResponseObject
    messages: list[dict[str, Any]]  # chat-template messages before the reply, without instructions
    input_items: list[dict[str, Any]]  # the request's own input, as Responses items with ids
    owner: str | None = None  # the API key's name that created it: only that key sees it
    stop: Callable[[], None] | None = None  # aborts its engine request; not stored, None once finished
    stored_at: float = field(default_factory=time.monotonic)  # one clock for all processes of the host

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
    def __init__(self, state: SharedState, max_count: int, max_age: float):
        self.state = state
        self.max_count = max_count
        self.max_age = max_age  # seconds
        self.running: dict[str, StoredResponse] = {}  # those this process runs, with their stop set

    def put(self, stored: StoredResponse) -> None:
        """Keep a new response, dropping the expired and the oldest beyond the count."""
        r = stored.response
        row = (
            r.id,
            stored.owner,
            r.status,
            r.model_dump_json(),
            json.dumps(stored.messages),
            json.dumps(stored.input_items),
            stored.stored_at,
        )
        with self.state.write() as db:  # serialized before: the write lock is held for the statements alone
            db.execute("DELETE FROM responses WHERE stored_at < ?", (time.monotonic() - self.max_age,))
            db.execute(
                "INSERT INTO responses (id, owner, status, response, messages, input_items, stored_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            newest_dropped = "SELECT seq FROM responses ORDER BY seq DESC LIMIT 1 OFFSET ?"
            db.execute(f"DELETE FROM responses WHERE seq <= ({newest_dropped})", (self.max_count,))
        if stored.stop is not None:
            self.running[r.id] = stored
        # a stream whose client left before its first event never finishes: past the age bound its
        # record is gone, and with it any way to cancel it
        for rid in [
            rid for rid, run in self.running.items() if run.stored_at < time.monotonic() - self.max_age
        ]:
            del self.running[rid]

    def get(self, response_id: str) -> StoredResponse | None:
        row = self.state.db.execute(
            "SELECT owner, status, response, messages, input_items, stored_at FROM responses"
            " WHERE id = ? AND stored_at >= ?",
            (response_id, time.monotonic() - self.max_age),
        ).fetchone()
        if row is None:
            return None
        owner, status, response, messages, input_items, stored_at = row
        obj = ResponseObject.model_validate_json(response)
        obj.status = status  # a cancel through any process writes the status alone
        return StoredResponse(obj, json.loads(messages), json.loads(input_items), owner, stored_at=stored_at)

    def delete(self, response_id: str) -> bool:
        return self.state.db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def discard(self, response_id: str) -> None:
        """Forget a response refused before it began (its client got an error reply, never its id)."""
        self.running.pop(response_id, None)
        self.delete(response_id)

    def cancel(self, response_id: str) -> bool:
        """Mark a response in progress cancelled; False where it is not (it ended, or is gone)."""
        return (
            self.state.db.execute(
                "UPDATE responses SET status = 'cancelled' WHERE id = ? AND status = 'in_progress'",
                (response_id,),
            ).rowcount
            > 0
        )

    def finish(self, stored: StoredResponse) -> bool:
        """Record a response that has ended (nothing, if it is gone); False, with nothing written, where
        it was cancelled meanwhile and says otherwise: the caller records it cancelled."""
        r = stored.response
        self.running.pop(r.id, None)
        update = (r.status, r.model_dump_json(), r.id)
        with self.state.write() as db:
            row = db.execute("SELECT status FROM responses WHERE id = ?", (r.id,)).fetchone()
            if row is None:
                return True
            if row[0] == "cancelled" and r.status != "cancelled":
                return False
            db.execute("UPDATE responses SET status = ?, response = ? WHERE id = ?", update)
        return True
