"""The web UI against a server that needs an API key: it asks for one, keeps it for the session, and a
refused key is asked for again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.helpers import ServerProcess, running_server
from tests.ui.chat_page import send, set_max_tokens, wait_for_reply


@pytest.fixture(scope="module")
def keyed_ui_server(tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("keyed-ui") / "server.log"
    with running_server(log, "--api-key", "sk-ui-test", "--num-kv-blocks", "128") as srv:
        yield srv


@pytest.fixture
def keyed_page(browser, keyed_ui_server) -> Iterator[Any]:
    context = browser.new_context(base_url=keyed_ui_server.base_url, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/")
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_the_ui_asks_for_the_key_and_chats_with_it(keyed_page):
    page = keyed_page
    dialog = page.locator("#api-key-dialog")
    dialog.wait_for(state="visible")  # /v1/models answered 401
    assert "asks for an API key" in dialog.locator("p").inner_text()
    page.fill("#api-key", "sk-wrong")
    page.click("#api-key-dialog button[value=ok]")
    dialog.wait_for(state="visible")  # refused: asked again, saying so
    page.wait_for_function("document.querySelector('#api-key-dialog p').textContent.includes('refused')")
    page.fill("#api-key", "sk-ui-test")
    page.click("#api-key-dialog button[value=ok]")
    page.wait_for_selector("#model option", state="attached")
    set_max_tokens(page, 4)
    with page.expect_request("**/v1/chat/completions") as request:
        send(page, "Say hi.")
    assert request.value.headers["authorization"] == "Bearer sk-ui-test"
    assert wait_for_reply(page, 0).locator(".content").inner_text()
    assert page.evaluate("sessionStorage.getItem('pyinfer.apiKey')") == "sk-ui-test"
