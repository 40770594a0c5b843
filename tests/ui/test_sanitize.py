"""Markdown from the model is sanitized: a <script> or an onerror handler in a reply never runs.

The model cannot be made to emit these reliably, so this one test answers the chat request itself (a
Playwright route) with a stream carrying them; what renders it is the UI's real code.
"""

from __future__ import annotations

import json

HOSTILE = [
    "Here is **bold** text.\n\n<script>window.pwned = 'script'</script>\n\n",
    '<img src="x" onerror="window.pwned = \'img\'">\n\n',
    "<a href=\"javascript:window.pwned='link'\">click</a>\n\n",
    "```html\n<script>alert(1)</script>\n```\n",
]


def sse_stream() -> str:
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"content": text}}]} for text in HOSTILE]
    perf = {
        "queue_ms": 0,
        "prefill_ms": 5,
        "decode_ms": 50,
        "decode_iterations": 4,
        "tokens_per_second": 80,
        "time_to_first_token_ms": 5,
    }
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    usage |= {"prompt_tokens_details": {"cached_tokens": 0}, "performance": perf}
    chunks.append({**head, "choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_script_in_reply_does_not_run(page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=sse_stream()),
    )
    page.fill("#prompt", "show me some html")
    page.press("#prompt", "Enter")
    content = page.locator(".message.assistant .content")
    page.locator(".message.assistant .metrics:not([hidden])").wait_for()
    assert content.locator("strong").inner_text() == "bold"  # the markdown did render
    assert content.locator("code").inner_text().strip() == "<script>alert(1)</script>"  # as text
    assert content.locator("script, [onerror], [href^='javascript:']").count() == 0
    content.locator("a").click()
    page.wait_for_timeout(300)  # time for the image's error and any handler to fire
    assert page.evaluate("window.pwned") is None
    assert dialogs == []


def test_pages_carry_a_content_security_policy(stats):
    for path in ("/", "/static/js/main.js"):
        policy = stats.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert stats.get("/static/../routes/ui.py").status_code == 404
    assert stats.get("/static/%2e%2e/routes/ui.py").status_code == 404
