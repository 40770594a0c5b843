"""Chat: a streamed reply with its metrics, a second turn that carries the first, Stop, server errors."""

from __future__ import annotations

from tests.server.helpers import engine_stats, wait_until
from tests.ui.chat_page import metrics, send, set_max_tokens, wait_for_reply
from tests.ui.conftest import screenshot

STREAMING_TEXT = (
    "document.querySelector('.message.assistant.streaming .content')?.textContent.trim().length > 0"
)


def test_reply_streams_and_shows_metrics(page):
    set_max_tokens(page, 24)
    body = send(page, "Write a haiku about the sea.")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 24 and body["model"] == "SmolLM2-135M-Instruct.Q4_1"
    page.wait_for_function(STREAMING_TEXT)  # text shows while the reply is still streaming
    reply = wait_for_reply(page, 0)
    assert reply.locator(".content").inner_text().strip()
    shown = metrics(reply)
    assert shown["Time to first token"].endswith(" ms") and float(shown["Tokens/s"]) > 0
    assert shown["Prefill"].endswith(" ms") and shown["Decode"].endswith(" ms")
    assert int(shown["Prompt tokens"]) > 10 and 0 < int(shown["Completion tokens"]) <= 24
    assert shown["Cached tokens"] == "0"
    assert page.locator("#conversation-list li.active").inner_text().startswith("Write a haiku")
    screenshot(page, "chat.png")
    page.set_viewport_size({"width": 390, "height": 760})  # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "chat-phone.png")


def test_second_turn_carries_the_first(page):
    set_max_tokens(page, 8)
    page.fill("#system-prompt", "You are terse.")
    page.fill("#prompt", "My name is Ada.")
    page.press("#prompt", "Shift+Enter")  # a new line, not a send
    assert page.locator(".message").count() == 0
    page.type("#prompt", "Remember it.")
    with page.expect_request("**/v1/chat/completions"):
        page.press("#prompt", "Enter")
    first = wait_for_reply(page, 0).locator(".content").inner_text().strip()

    body = send(page, "What is my name?")
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "You are terse."
    assert body["messages"][1]["content"] == "My name is Ada.\nRemember it."
    assert body["messages"][2]["content"].strip() == first
    second = wait_for_reply(page, 1)
    assert int(metrics(second)["Cached tokens"]) > 0  # the first turn's prompt came from the prefix cache

    page.reload()  # the conversation is kept in localStorage
    page.locator(".message").nth(3).wait_for()
    assert page.locator(".message").count() == 4
    assert page.input_value("#system-prompt") == "You are terse."


def test_stop_aborts_the_reply(page, stats):
    set_max_tokens(page, 1500)
    send(page, "Write a very long story about a lighthouse keeper.")
    page.wait_for_function(STREAMING_TEXT)
    assert engine_stats(stats)["num_requests_running"] == 1
    page.click("#stop")
    reply = page.locator(".message.assistant").first
    reply.locator(".message-note:not([hidden])").wait_for()
    assert reply.locator(".message-note").inner_text() == "Stopped."
    assert page.locator("#send").is_visible() and page.locator("#stop").is_hidden()
    wait_until(lambda: engine_stats(stats)["num_requests_running"] == 0, timeout=5)
    assert engine_stats(stats)["requests"] == []
    shown_before = reply.locator(".content").inner_text()

    reply.locator(".regenerate").click()  # a stopped reply can be generated again
    page.wait_for_function(STREAMING_TEXT)
    page.click("#stop")
    page.locator(".message.assistant .message-note:not([hidden])").wait_for()
    assert page.locator(".message.assistant").count() == 1 and shown_before


def test_server_error_is_shown(page):
    set_max_tokens(page, 100_000)  # beyond the model's context
    send(page, "Hello")
    error = page.locator(".message.assistant .message-error:not([hidden])")
    error.wait_for()
    assert "maximum context length is 8192 tokens" in error.inner_text()
    assert "(HTTP 400)" in error.inner_text()
    assert page.locator("#send").is_visible()


def test_settings_start_from_the_model_s_defaults(page):
    page.click("#settings summary")
    assert page.input_value("#temperature") == "0"  # the embedded model's default, from /v1/models
    assert page.input_value("#top-p") == "1"
    body = send(page, "What is the capital of France?")
    assert "temperature" not in body and "top_p" not in body  # left to the server
    assert "Paris" in wait_for_reply(page, 0).locator(".content").inner_text()

    page.fill("#temperature", "0.5")
    page.dispatch_event("#temperature", "change")
    page.reload()  # the user's own value is kept
    page.click("#settings summary")
    assert page.input_value("#temperature") == "0.5"
    assert send(page, "Hello")["temperature"] == 0.5
    wait_for_reply(page, 1)
    page.click("#reset-settings")
    assert page.input_value("#temperature") == "0"
    assert "temperature" not in send(page, "Hello again")
