"""Steps on the chat view that several tests take."""

from __future__ import annotations

import json
from typing import Any


def set_max_tokens(page: Any, max_tokens: int) -> None:
    page.click("#settings summary")
    page.fill("#max-tokens", str(max_tokens))
    page.dispatch_event("#max-tokens", "change")


def send(page: Any, text: str) -> dict[str, Any]:
    """Types `text` and presses Enter; returns the JSON body the UI sent."""
    page.fill("#prompt", text)
    with page.expect_request("**/v1/chat/completions") as request:
        page.press("#prompt", "Enter")
    return json.loads(request.value.post_data)


def wait_for_reply(page: Any, nth: int) -> Any:
    """The nth assistant reply (0-based), once it has finished and shows its metrics."""
    reply = page.locator(".message.assistant").nth(nth)
    reply.locator(".metrics:not([hidden])").wait_for()
    return reply


def metrics(reply: Any) -> dict[str, str]:
    """The metrics line under a reply: label -> shown value."""
    labels = reply.locator(".metrics dt").all_inner_texts()
    values = reply.locator(".metrics dd").all_inner_texts()
    return dict(zip(labels, values, strict=True))
