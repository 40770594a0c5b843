"""The dashboard follows a running request: counts, tokens and the live queue change, then settle."""

from __future__ import annotations

import threading

import httpx

from tests.server.helpers import engine_stats
from tests.ui.conftest import screenshot


def stream_until(base_url: str, stop: threading.Event) -> None:
    """A long streamed chat request, read until `stop` is set, then dropped (the server aborts it)."""
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as response:
        for _ in response.iter_lines():
            if stop.is_set():
                return


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_dashboard_follows_a_request(page, ui_server, stats):
    page.click("#tab-dashboard")
    page.wait_for_function("document.querySelector('#stat-running').textContent === '0'")
    assert page.locator("#no-gpu").is_visible()  # no GPU on the test machine
    tokens_before = text(page, "#stat-tokens")
    stop = threading.Event()
    request = threading.Thread(target=stream_until, args=(ui_server.base_url, stop))
    request.start()
    try:
        page.wait_for_function("document.querySelector('#stat-running').textContent === '1'", timeout=10_000)
        row = page.locator("#queue-body tr").first
        assert row.locator("td.state").inner_text() in ("prefill", "decode")
        generated = int(row.locator("td").nth(6).inner_text())
        page.wait_for_function(  # the next poll: more tokens generated
            f"Number(document.querySelector('#queue-body tr td:nth-child(7)')?.textContent) > {generated}",
            timeout=10_000,
        )
        assert row.locator("td.state").inner_text() == "decode"
        (engine_request,) = engine_stats(stats)["requests"]  # what the queue shows
        assert engine_request["request_id"] == row.locator("td").first.inner_text()
        assert engine_request["state"] == "decode" and engine_request["output_tokens"] > generated
        assert engine_request["computed_tokens"] >= engine_request["prompt_tokens"] > 0
        assert text(page, "#stat-tokens") != tokens_before
        assert float(text(page, "#stat-tps")) > 0
        assert text(page, "#stat-kv") != "0.0%"
        screenshot(page, "dashboard.png")
    finally:
        stop.set()
        request.join()
    page.wait_for_function("document.querySelector('#stat-running').textContent === '0'", timeout=10_000)
    assert page.locator("#queue-empty").is_visible() and page.locator("#queue-body tr").count() == 0
